"""Chat data: read SFT files in any common format and normalize them to one ``messages`` shape.

    load_conversations(["identity.json", "sharegpt.jsonl"], weights=[3, 1], placeholders={"name": "MiniLM"})
    -> ChatData(dataset=Dataset({features: ['messages', 'tools', 'source', 'record']}), stats=...)

Formats (detected per record, or named per file):
- OpenAI-style ``messages`` (``role``/``content``; content may be a list of
  ``{"type": "text", "text"|"value": ...}`` parts; an optional per-message ``loss_weight`` 0/1;
  assistant ``tool_calls`` and ``role: tool`` results with ``tool_call_id``);
- ShareGPT ``conversations`` (``from``/``value`` with human/gpt/system, optional top-level
  ``system``; LLaMA-Factory's tool turns ``function_call`` (a JSON call, or a list of them) and
  ``observation`` (its result));
- Alpaca (``instruction``/``input``/``output``, optional ``system`` and ``history`` of
  [question, answer] pairs);
- TRL's ``prompt``/``completion``: strings (plain text, the loss on the completion only) or
  message lists (rendered as chat; assistant turns in the prompt are context only);
- TRL's ``text``: plain text, the loss on all of it.
Any chat record may carry ``tools``: a list (or a JSON string of a list) of function schemas,
bare (LLaMA-Factory) or OpenAI-wrapped ``{"type": "function", "function": {...}}``.

Every chat conversation becomes ``[system?] user assistant [tool... assistant] user ...`` with
string content; plain text becomes messages of role ``text`` (``TEXT_ROLE``), rendered without a
chat template. The stored form is Arrow-friendly (tool-call arguments and the tools list are JSON
strings); ``template_messages`` and ``row_tools`` turn a stored row into what
``tokenizer.apply_chat_template(messages, tools=tools)`` expects: every renderer (SFT labels,
preference pairs) goes through them.

Structural problems (bad JSON, missing field, unknown role, roles out of order, non-string or
empty assistant content, a malformed tool call) raise ``ChatDataError`` naming file, line/record
and field; with ``skip_invalid`` they are skipped and counted per file and reason. Trailing user
turns (or tool results) without an answer are trimmed and counted; a conversation left without
any assistant turn is dropped and counted. Record fields a format does not use are counted per
file and reported, never dropped in silence.
"""

from __future__ import annotations

import json
import logging
import math
import random
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

from datasets import Dataset

from ..errors import UserError
from ..records import RecordError, read_records
from ..tool_calls import openai_tool, template_call
from .corpus import CorpusError, resolve_corpus_specs

logger = logging.getLogger(__name__)

FORMATS = ("messages", "sharegpt", "alpaca", "prompt_completion", "text")
ROLES = ("system", "user", "assistant", "tool")
TEXT_ROLE = "text"  # a plain-text piece (TRL text / string prompt-completion): no chat template
SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "system": "system",
    "function_call": "assistant",  # LLaMA-Factory: the value is the call (JSON)
    "observation": "tool",  # LLaMA-Factory: the value is the call's result
    "tool": "tool",
}
PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")  # {{name}}; "{{ form.as_p }}" in code answers is left alone
# Fields each format reads (a record's others are counted as ignored): record level, then the
# keys of its message lists and the fields read on each message.
OPENAI_MESSAGE_FIELDS = {"role", "content", "loss_weight", "tool_calls", "tool_call_id"}
FIELDS = {
    "messages": ({"messages", "tools"}, ("messages",), OPENAI_MESSAGE_FIELDS),
    "sharegpt": ({"conversations", "system", "tools"}, ("conversations",), {"from", "value"}),
    "alpaca": ({"instruction", "input", "output", "system", "history", "tools"}, (), set()),
    "prompt_completion": ({"prompt", "completion", "tools"}, ("prompt", "completion"), OPENAI_MESSAGE_FIELDS),
    "text": ({"text"}, (), set()),
}
SKIP_WARNING_FRACTION = 0.01  # more skipped records than this in a file: a WARNING, not an INFO line


class ChatDataError(UserError, ValueError):
    """An SFT record or file that cannot be used; the message names file, line/record and field.

    ``reason`` is the short kind of problem ("unknown role"), used to count skips.
    """

    def __init__(self, message: str, reason: str = "invalid record"):
        super().__init__(message)
        self.reason = reason


class SkippedRecord(Exception):
    """Internal: a record that is valid but holds nothing to train on (counted, not an error)."""


@dataclass
class ChatStats:
    """What loading did to each file: records read, kept, skipped and why (for the label audit)."""

    # path -> {format, records, kept, skipped: {reason: n}, ignored_fields: {field: records}}
    files: dict[str, dict] = field(default_factory=dict)
    mix: dict[str, dict] = field(default_factory=dict)  # spec -> {conversations, weight, samples}
    skipped: Counter = field(default_factory=Counter)  # reason -> conversations
    trimmed_trailing_user: int = 0
    trimmed_trailing_tool: int = 0
    empty_user_turns: int = 0
    unfilled_placeholders: Counter = field(default_factory=Counter)  # name -> occurrences

    @property
    def ignored_fields(self) -> Counter:
        """field -> records that carried it, over every file."""
        return sum((Counter(info["ignored_fields"]) for info in self.files.values()), Counter())


@dataclass
class ChatData:
    # messages: [{role, content, loss_weight, tool_calls, tool_call_id}], tools: JSON str | None,
    # source: str, record: str
    dataset: Dataset
    stats: ChatStats


# --------------------------------------------------------------------------- reading


def detect_format(record: object, where: str) -> str:
    """{"messages"} -> messages; {"conversations"} -> sharegpt; {"instruction"} -> alpaca;
    {"prompt", "completion"} -> prompt_completion; {"text"} -> text."""
    if isinstance(record, dict):
        if "messages" in record:
            return "messages"
        if "conversations" in record:
            return "sharegpt"
        if "instruction" in record or "output" in record:
            return "alpaca"
        if "prompt" in record or "completion" in record:
            return "prompt_completion"
        if "text" in record:
            return "text"
        raise ChatDataError(
            f"{where}: cannot tell the chat format from fields {sorted(record)[:8]}: expected "
            "'messages', 'conversations', 'instruction'/'output', 'prompt'/'completion' or 'text' "
            "(or set data_formats)",
            "unknown format",
        )
    raise ChatDataError(
        f"{where}: a record must be a JSON object, got {type(record).__name__}", "record not an object"
    )


def ignored_fields(record: dict, fmt: str) -> set[str]:
    """Fields of a record its format does not read: {"id", "conversations[].weight"}.

    ``tools`` on a plain-text record (string prompt/completion) is ignored too: no template renders it.
    """
    known, list_keys, message_keys = FIELDS[fmt]
    out = set(record) - known
    if fmt == "prompt_completion" and isinstance(record.get("prompt"), str) and record.get("tools"):
        out.add("tools")
    for list_key in list_keys:
        items = record.get(list_key)
        for m in items if isinstance(items, list) else []:
            if isinstance(m, dict):
                out.update(f"{list_key}[].{key}" for key in set(m) - message_keys)
    return out


# --------------------------------------------------------------------------- normalizing


def _text(value: object, where: str, name: str) -> str:
    """A message content: a string, or a list of text parts joined. Anything else is an error.

    [{"type": "text", "value": "hi"}, {"type": "text", "text": " there"}] -> "hi there"
    """
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(p, dict) for p in value):
        pieces = []
        for j, part in enumerate(value):
            kind = part.get("type", "text")
            text = part.get("text", part.get("value"))
            if kind != "text" or not isinstance(text, str):
                raise ChatDataError(
                    f"{where}: {name}[{j}]: only text parts are supported "
                    f"(type '{kind}', text {type(text).__name__})",
                    "non-text content part",
                )
            pieces.append(text)
        return "".join(pieces)
    raise ChatDataError(
        f"{where}: {name}: content must be a string or a list of text parts, got {type(value).__name__}",
        "non-string content",
    )


def _msg(
    role: str,
    content: str,
    loss_weight: float = 1.0,
    tool_calls: list[dict] | None = None,
    tool_call_id: str | None = None,
) -> dict:
    """One stored message; every message has every key (an Arrow struct), None where unused."""
    return {
        "role": role,
        "content": content,
        "loss_weight": loss_weight,
        "tool_calls": tool_calls,
        "tool_call_id": tool_call_id,
    }


def _field(record: dict, key: str, where: str, fmt: str):
    if key not in record:
        raise ChatDataError(
            f"{where}: missing field '{key}' ({fmt} format; fields: {sorted(record)[:8]})", "missing field"
        )
    return record[key]


def _message_list(value: object, where: str, key: str) -> list:
    if not isinstance(value, list) or not value:
        raise ChatDataError(f"{where}: field '{key}' must be a non-empty list of messages", "no messages")
    for i, m in enumerate(value):
        if not isinstance(m, dict):
            raise ChatDataError(
                f"{where}: {key}[{i}] must be an object, got {type(m).__name__}", "message not an object"
            )
    return value


def _json(value: object, where: str, name: str, reason: str):
    """A JSON string is parsed; anything else is returned as it is."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError as err:
        raise ChatDataError(
            f"{where}: {name}: not valid JSON ({err.msg} at column {err.colno})", reason
        ) from err


def _tool_call(value: object, where: str, name: str) -> dict:
    """One call -> {"id", "type": "function", "function": {"name", "arguments": JSON text}}.

    Accepts OpenAI's {"id", "type", "function": {"name", "arguments": "<JSON>"}} and
    LLaMA-Factory's {"name", "arguments": {...}}; the arguments must be a JSON object.
    """
    if not isinstance(value, dict):
        raise ChatDataError(f"{where}: {name} must be an object, got {type(value).__name__}", "bad tool call")
    function = value.get("function", value)
    if not isinstance(function, dict) or not isinstance(function.get("name"), str) or not function["name"]:
        raise ChatDataError(f"{where}: {name}: a tool call needs a function name", "bad tool call")
    arguments = _json(function.get("arguments", {}), where, f"{name}.arguments", "bad tool call")
    if not isinstance(arguments, dict):
        raise ChatDataError(
            f"{where}: {name}.arguments must be a JSON object, got {type(arguments).__name__}",
            "bad tool call",
        )
    call_id = value.get("id")
    return {
        "id": call_id if isinstance(call_id, str) else None,
        "type": "function",
        "function": {"name": function["name"], "arguments": json.dumps(arguments, ensure_ascii=False)},
    }


def _tool_calls(value: object, where: str, name: str) -> list[dict]:
    """A list of calls (or one call, or the JSON text of either) -> normalized calls."""
    value = _json(value, where, name, "bad tool call")
    calls = value if isinstance(value, list) else [value]
    if not calls:
        raise ChatDataError(f"{where}: {name}: an empty list of tool calls", "bad tool call")
    return [_tool_call(call, where, f"{name}[{j}]") for j, call in enumerate(calls)]


def _tools(record: dict, where: str) -> str | None:
    """The record's ``tools`` -> JSON text of OpenAI-wrapped schemas, or None when there are none.

    '[{"name": "f", "parameters": {...}}]' -> '[{"type": "function", "function": {"name": "f", ...}}]'
    (the shape OpenAI clients send, and the one Qwen's and TRL's templates are written for).
    """
    tools = _json(record.get("tools"), where, "tools", "bad tools")
    if not tools:
        return None
    if not isinstance(tools, list):
        raise ChatDataError(f"{where}: tools must be a list of function schemas", "bad tools")
    wrapped = []
    for j, tool in enumerate(tools):
        try:
            wrapped.append(openai_tool(tool))
        except ValueError as err:
            raise ChatDataError(f"{where}: tools[{j}]: {err}", "bad tools") from None
    return json.dumps(wrapped, ensure_ascii=False)


def _loss_weight(m: dict, where: str, name: str) -> float:
    weight = m.get("loss_weight", 1.0)
    if isinstance(weight, bool) or weight not in (0, 1):  # True == 1 in Python: a JSON true is not 0/1
        raise ChatDataError(f"{where}: {name}.loss_weight must be 0 or 1, got {weight!r}", "bad loss_weight")
    return float(weight)


def _openai_message(m: dict, where: str, name: str) -> dict:
    role = _field(m, "role", f"{where}: {name}", "messages")
    if role not in ROLES:
        raise ChatDataError(
            f"{where}: {name}.role: unknown role {role!r} (known: {', '.join(ROLES)})", "unknown role"
        )
    calls = m.get("tool_calls") or None
    if calls is not None and role != "assistant":
        raise ChatDataError(f"{where}: {name}: only assistant messages make tool_calls", "bad tool call")
    # OpenAI sends "content": null next to tool calls
    content = (m.get("content") or "") if calls else _field(m, "content", f"{where}: {name}", "messages")
    call_id = m.get("tool_call_id")
    return _msg(
        role,
        _text(content, where, f"{name}.content"),
        _loss_weight(m, where, name),
        _tool_calls(calls, where, f"{name}.tool_calls") if calls else None,
        call_id if role == "tool" and isinstance(call_id, str) else None,
    )


def from_messages(record: dict, where: str) -> list[dict]:
    turns = _message_list(_field(record, "messages", where, "messages"), where, "messages")
    return [_openai_message(m, where, f"messages[{i}]") for i, m in enumerate(turns)]


def from_sharegpt(record: dict, where: str) -> list[dict]:
    messages = []
    if record.get("system") is not None:
        messages.append(_msg("system", _text(record["system"], where, "system")))
    turns = _message_list(_field(record, "conversations", where, "sharegpt"), where, "conversations")
    for i, m in enumerate(turns):
        name = f"conversations[{i}]"
        speaker = _field(m, "from", f"{where}: {name}", "sharegpt")
        if speaker not in SHAREGPT_ROLES:
            raise ChatDataError(
                f"{where}: {name}.from: unknown role {speaker!r} (known: {', '.join(SHAREGPT_ROLES)})",
                "unknown role",
            )
        value = _field(m, "value", f"{where}: {name}", "sharegpt")
        if speaker == "function_call":
            messages.append(_msg("assistant", "", tool_calls=_tool_calls(value, where, f"{name}.value")))
        else:
            messages.append(_msg(SHAREGPT_ROLES[speaker], _text(value, where, f"{name}.value")))
    return messages


def from_alpaca(record: dict, where: str) -> list[dict]:
    """instruction + "\\n" + input -> user; output -> assistant; history pairs come first."""
    messages = []
    if record.get("system"):
        messages.append(_msg("system", _text(record["system"], where, "system")))
    history = record.get("history") or []
    if not isinstance(history, list):
        raise ChatDataError(f"{where}: history must be a list of [question, answer] pairs", "bad history")
    for i, pair in enumerate(history):
        if not (isinstance(pair, list) and len(pair) == 2):
            raise ChatDataError(f"{where}: history[{i}] must be a [question, answer] pair", "bad history")
        messages.append(_msg("user", _text(pair[0], where, f"history[{i}][0]")))
        messages.append(_msg("assistant", _text(pair[1], where, f"history[{i}][1]")))
    prompt = _text(_field(record, "instruction", where, "alpaca"), where, "instruction")
    extra = _text(record.get("input") or "", where, "input")
    prompt = f"{prompt}\n{extra}" if prompt and extra else prompt or extra
    messages.append(_msg("user", prompt))
    messages.append(_msg("assistant", _text(_field(record, "output", where, "alpaca"), where, "output")))
    return messages


def from_prompt_completion(record: dict, where: str) -> list[dict]:
    """TRL's prompt-completion. Strings: plain text, loss on the completion only
    ({"prompt": "1+1=", "completion": "2"} -> [text "1+1=" (weight 0), text "2"]). Message lists:
    the prompt's messages are context (weight 0), the completion's are trained as chat answers."""
    prompt = _field(record, "prompt", where, "prompt_completion")
    completion = _field(record, "completion", where, "prompt_completion")
    if isinstance(prompt, str) and isinstance(completion, str):
        return [_msg(TEXT_ROLE, prompt, 0.0), _msg(TEXT_ROLE, completion)]
    if not (isinstance(prompt, list) and isinstance(completion, list)):
        raise ChatDataError(
            f"{where}: prompt and completion must both be strings or both be message lists "
            f"(got {type(prompt).__name__} and {type(completion).__name__})",
            "bad prompt/completion",
        )
    context = [
        _openai_message(m, where, f"prompt[{i}]")
        for i, m in enumerate(_message_list(prompt, where, "prompt"))
    ]
    answers = _message_list(completion, where, "completion")
    for m in context:
        m["loss_weight"] = 0.0  # completion-only loss, as TRL's completion_only_loss
    return context + [_openai_message(m, where, f"completion[{i}]") for i, m in enumerate(answers)]


def from_text(record: dict, where: str) -> list[dict]:
    """TRL's language-modeling text: {"text": "..."} -> [text "..."] (every token a target)."""
    text = _field(record, "text", where, "text")
    if not isinstance(text, str):
        raise ChatDataError(
            f"{where}: text must be a string, got {type(text).__name__}", "non-string content"
        )
    if not text.strip():
        raise SkippedRecord("empty text")
    return [_msg(TEXT_ROLE, text)]


NORMALIZERS = {
    "messages": from_messages,
    "sharegpt": from_sharegpt,
    "alpaca": from_alpaca,
    "prompt_completion": from_prompt_completion,
    "text": from_text,
}


# The messages each role may follow ("assistant+calls": an assistant message making tool calls;
# None: the first message after an optional system message).
MAY_FOLLOW = {
    "user": {None, "assistant", "assistant+calls"},
    "assistant": {"user", "tool"},
    "tool": {"assistant+calls", "tool"},
}


def _slot(m: dict) -> str:
    return "assistant+calls" if m["role"] == "assistant" and m.get("tool_calls") else m["role"]


def _expected(previous: str | None) -> str:
    return {None: "user", "user": "assistant", "tool": "tool or assistant"}.get(previous, "user")


def check_turn_order(messages: list[dict], where: str, stats: ChatStats) -> list[dict]:
    """[system?] user assistant [tool... assistant] user ...; trailing unanswered user turns and
    tool results are trimmed (counted).

    [user "a", assistant "b", user "c"] -> [user "a", assistant "b"]
    [user "a", assistant call f, tool "42"] -> [user "a", assistant call f]
    """
    start = 1 if messages and messages[0]["role"] == "system" else 0
    previous = None
    for i, m in enumerate(messages[start:], start):
        if previous not in MAY_FOLLOW.get(m["role"], ()):
            after = f"after '{messages[i - 1]['role']}'" if i else "as the first message"
            raise ChatDataError(
                f"{where}: roles out of order: message {i} is '{m['role']}' {after} (expected "
                f"'{_expected(previous)}'; a conversation is [system] user assistant user ..., and a "
                "tool result follows the assistant's tool call)",
                "roles out of order",
            )
        if m["role"] == "assistant" and not m["content"].strip() and not m.get("tool_calls"):
            raise ChatDataError(f"{where}: message {i}: empty assistant content", "empty assistant content")
        if m["role"] == "user" and not m["content"].strip():
            stats.empty_user_turns += 1
        previous = _slot(m)
    while len(messages) > start and messages[-1]["role"] in ("user", "tool"):
        if messages[-1]["role"] == "user":
            stats.trimmed_trailing_user += 1
        else:
            stats.trimmed_trailing_tool += 1
        messages = messages[:-1]
    if not any(m["role"] == "assistant" for m in messages):
        raise SkippedRecord("no assistant turn")
    return messages


def first_turns(messages: list[dict], max_turns: int | None) -> list[dict]:
    """Keep the system message and the first ``max_turns`` exchanges (a user turn and all that
    answers it: tool calls, their results, the reply).

    [sys, u1, a1, u2, a2], 1 -> [sys, u1, a1]
    """
    users = [i for i, m in enumerate(messages) if m["role"] == "user"]
    if not max_turns or len(users) <= max_turns:
        return messages
    return messages[: users[max_turns]]


def fill_placeholders(text: str, values: dict[str, str], unfilled: Counter) -> str:
    """ "I am {{name}}" + {"name": "MiniLM"} -> "I am MiniLM"; unknown names stay and are counted."""

    def sub(m: re.Match) -> str:
        if m.group(1) in values:
            return str(values[m.group(1)])
        unfilled[m.group(1)] += 1
        return m.group(0)

    return PLACEHOLDER.sub(sub, text)


# --------------------------------------------------------------------------- loading


@dataclass
class LoadOptions:
    formats: list[str] = field(default_factory=list)  # [] auto; one for all files; or one per spec
    system_prompt: str | None = None  # used when a conversation has no system message
    placeholders: dict[str, str] = field(default_factory=dict)
    max_turns: int | None = None
    skip_invalid: bool = False


def normalize_record(
    record: object, where: str, fmt: str, options: LoadOptions, stats: ChatStats
) -> tuple[list[dict], str | None]:
    """One record -> (checked messages with placeholders filled and the system prompt applied,
    its tools as JSON text or None)."""
    if not isinstance(record, dict):
        raise ChatDataError(
            f"{where}: a record must be a JSON object, got {type(record).__name__}", "record not an object"
        )
    messages = NORMALIZERS[fmt](record, where)
    tools = None
    if messages[0]["role"] != TEXT_ROLE:  # plain text has no turns, no system message, no tools
        tools = _tools(record, where)
        messages = first_turns(check_turn_order(messages, where, stats), options.max_turns)
        if options.system_prompt and messages[0]["role"] != "system":
            messages = [_msg("system", options.system_prompt), *messages]
    for m in messages:
        m["content"] = fill_placeholders(m["content"], options.placeholders, stats.unfilled_placeholders)
    return messages, tools


def load_file(path: str, fmt: str, options: LoadOptions, stats: ChatStats) -> list[dict]:
    """All usable conversations of one file as rows {messages, tools, source, record}.

    With ``fmt`` "auto" each record's format is detected on its own, so formats mix freely.
    """
    rows, formats, first_error = [], Counter(), {}
    info = {"format": fmt, "records": 0, "kept": 0, "skipped": Counter(), "ignored_fields": Counter()}
    for where, record in _records(path):
        info["records"] += 1
        try:
            kind = detect_format(record, where) if fmt == "auto" else fmt
            if isinstance(record, dict):
                info["ignored_fields"].update(ignored_fields(record, kind))
            formats[kind] += 1
            messages, tools = normalize_record(record, where, kind, options, stats)
        except SkippedRecord as skip:
            info["skipped"][str(skip)] += 1
            continue
        except ChatDataError as err:
            if not options.skip_invalid:
                raise
            info["skipped"][f"invalid: {err.reason}"] += 1
            first_error.setdefault(err.reason, str(err))
            continue
        rows.append({"messages": messages, "tools": tools, "source": path, "record": where})
    if info["records"] == 0:
        raise ChatDataError(f"{path}: no records")
    info["kept"] = len(rows)
    info["format"] = "+".join(sorted(formats)) or fmt
    stats.files[path] = info
    stats.skipped.update(info["skipped"])
    _report_file(path, info, first_error)
    return rows


def _report_file(path: str, info: dict, first_error: dict[str, str]) -> None:
    """One line per file for its skipped records (a WARNING above SKIP_WARNING_FRACTION) and one
    WARNING for fields its format does not read."""
    skipped = sum(info["skipped"].values())
    if skipped:
        level = logging.WARNING if skipped > SKIP_WARNING_FRACTION * info["records"] else logging.INFO
        examples = "".join(f"; first '{reason}': {text}" for reason, text in first_error.items())
        logger.log(
            level,
            "%s: skipped %d of %d records (%s)%s",
            path,
            skipped,
            info["records"],
            _counts(info["skipped"]),
            examples,
        )
    if info["ignored_fields"]:
        logger.warning(
            "%s: fields the %s format does not use, ignored (records): %s",
            path,
            info["format"],
            _counts(info["ignored_fields"]),
        )


def _counts(counter: Counter) -> str:
    return ", ".join(f"{key}: {n}" for key, n in counter.most_common())


def _records(path: str) -> Iterator[tuple[str, object]]:
    try:
        yield from read_records(path)
    except RecordError as err:
        raise ChatDataError(str(err), "not valid JSON") from err


def resolve_chat_files(spec: str) -> list[str]:
    """A .json/.jsonl file, a folder of them, or a glob -> sorted file paths."""
    try:
        files, hub = resolve_corpus_specs([spec])
    except CorpusError as err:
        raise ChatDataError(str(err).replace("corpus", "SFT data")) from err
    if hub:
        raise ChatDataError(
            f"SFT data file not found: {spec} (hub datasets are not read here: "
            "save them as .json/.jsonl first)"
        )
    other = [p for builder, paths in files.items() if builder != "json" for p in paths]
    if other:
        raise ChatDataError(f"{other[0]}: SFT data must be .json or .jsonl")
    return files["json"]


def apply_weight(rows: list[dict], weight: float, rng: random.Random) -> list[dict]:
    """Repeat rows ``weight`` times: 2.0 -> every row twice; 0.5 -> a random half (without repeats)."""
    if weight < 0 or math.isnan(weight):
        raise ChatDataError(f"mix weight must be >= 0, got {weight}")
    whole, frac = int(weight), weight - int(weight)
    return rows * whole + rng.sample(rows, round(frac * len(rows)))


def load_conversations(
    specs: list[str], options: LoadOptions | None = None, weights: list[float] | None = None, seed: int = 0
) -> ChatData:
    """Read, check and normalize every spec; repeat each spec's rows by its weight; shuffle.

    A run with nothing left to train on is an error naming what was skipped and why.
    """
    options = options or LoadOptions()
    if not specs:
        raise ChatDataError("no SFT data: set train_files")
    formats = _per_spec(options.formats or ["auto"], specs, "data_formats")
    weights = _per_spec(weights or [1.0], specs, "mix_weights")
    stats, rng, rows = ChatStats(), random.Random(seed), []
    for spec, fmt, weight in zip(specs, formats, weights):
        if fmt != "auto" and fmt not in FORMATS:
            raise ChatDataError(f"unknown data format '{fmt}' for {spec} (auto | {' | '.join(FORMATS)})")
        spec_rows = [row for path in resolve_chat_files(spec) for row in load_file(path, fmt, options, stats)]
        mixed = apply_weight(spec_rows, float(weight), rng)
        stats.mix[spec] = {"conversations": len(spec_rows), "weight": float(weight), "samples": len(mixed)}
        rows.extend(mixed)
    if stats.unfilled_placeholders:
        logger.warning(
            "placeholders without a value (set placeholders: {name: ...}): %s",
            dict(stats.unfilled_placeholders),
        )
    if not rows:
        raise ChatDataError(f"no usable conversations in {specs}: skipped {dict(stats.skipped)}")
    rng.shuffle(rows)
    return ChatData(Dataset.from_list(rows), stats)


def _per_spec(values: list, specs: list[str], name: str) -> list:
    if len(values) == 1:
        return values * len(specs)
    if len(values) != len(specs):
        raise ChatDataError(
            f"{name} has {len(values)} entries for {len(specs)} train_files (give 1 or one per file)"
        )
    return values


# --------------------------------------------------------------------------- rendering inputs


def template_messages(messages: list[dict]) -> list[dict]:
    """Stored messages -> the dicts chat templates read: unused (None) keys dropped, tool-call
    arguments parsed back into objects (Qwen's and HF's templates render them with ``tojson``).

    [{"role": "assistant", "content": "", "loss_weight": 1.0, "tool_call_id": None, "tool_calls":
      [{"id": None, "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}}]}]
    -> [{"role": "assistant", "content": "", "loss_weight": 1.0, "tool_calls":
      [{"type": "function", "function": {"name": "f", "arguments": {"x": 1}}}]}]
    """
    out = []
    for m in messages:
        message = {key: value for key, value in m.items() if value is not None}
        if m.get("tool_calls"):
            message["tool_calls"] = [
                template_call(call["function"]["name"], call["function"]["arguments"], call["id"])
                for call in m["tool_calls"]
            ]
        out.append(message)
    return out


def row_tools(tools: str | None) -> list[dict] | None:
    """A row's stored tools -> the list ``apply_chat_template(..., tools=...)`` takes (None: no tools)."""
    return json.loads(tools) if tools else None
