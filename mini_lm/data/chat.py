"""Chat data: read SFT files in any common format and normalize them to one ``messages`` shape.

    load_conversations(["identity.json", "sharegpt.jsonl"], weights=[3, 1], placeholders={"name": "MiniLM"})
    -> ChatData(dataset=Dataset({features: ['messages', 'source', 'record']}), stats=...)

Formats (detected per file from its first record, or named): OpenAI-style ``messages``
(``role``/``content``; content may be a list of ``{"type": "text", "text"|"value": ...}`` parts;
an optional per-message ``loss_weight`` 0/1), ShareGPT ``conversations`` (``from``/``value`` with
human/gpt/system, optional top-level ``system``), Alpaca (``instruction``/``input``/``output``,
optional ``system`` and ``history`` of [question, answer] pairs). Every conversation becomes
``[system?] user assistant user assistant ...`` with string content.

Structural problems (bad JSON, missing field, unknown role, roles out of order, non-string or
empty assistant content) raise ``ChatDataError`` naming file, line/record and field; with
``skip_invalid`` they are skipped and counted instead. Trailing user turns without an answer are
trimmed and counted; a conversation left without any assistant turn is dropped and counted.
"""

from __future__ import annotations

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
from .corpus import CorpusError, resolve_corpus_specs

logger = logging.getLogger(__name__)

FORMATS = ("messages", "sharegpt", "alpaca")
ROLES = ("system", "user", "assistant")
SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "system": "system",
}
PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")  # {{name}}; "{{ form.as_p }}" in code answers is left alone


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

    files: dict[str, dict] = field(default_factory=dict)  # path -> {format, records, kept}
    mix: dict[str, dict] = field(default_factory=dict)  # spec -> {conversations, weight, samples}
    skipped: Counter = field(default_factory=Counter)  # reason -> conversations
    trimmed_trailing_user: int = 0
    empty_user_turns: int = 0
    unfilled_placeholders: Counter = field(default_factory=Counter)  # name -> occurrences


@dataclass
class ChatData:
    dataset: Dataset  # messages: [{role, content, loss_weight}], source: str, record: str
    stats: ChatStats


# --------------------------------------------------------------------------- reading


def detect_format(record: object, where: str) -> str:
    """{"messages": ...} -> messages; {"conversations": ...} -> sharegpt; {"instruction": ...} -> alpaca."""
    if isinstance(record, dict):
        if "messages" in record:
            return "messages"
        if "conversations" in record:
            return "sharegpt"
        if "instruction" in record or "output" in record:
            return "alpaca"
        raise ChatDataError(
            f"{where}: cannot tell the chat format from fields {sorted(record)[:8]}: expected "
            "'messages', 'conversations' or 'instruction'/'output' (or set data_formats)",
            "unknown format",
        )
    raise ChatDataError(
        f"{where}: a record must be a JSON object, got {type(record).__name__}", "record not an object"
    )


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


def _msg(role: str, content: str, loss_weight: float = 1.0) -> dict:
    return {"role": role, "content": content, "loss_weight": loss_weight}


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


def from_messages(record: dict, where: str) -> list[dict]:
    messages = []
    for i, m in enumerate(_message_list(_field(record, "messages", where, "messages"), where, "messages")):
        name = f"messages[{i}]"
        role = _field(m, "role", f"{where}: {name}", "messages")
        if role not in ROLES:
            raise ChatDataError(
                f"{where}: {name}.role: unknown role {role!r} (known: {', '.join(ROLES)})", "unknown role"
            )
        weight = m.get("loss_weight", 1.0)
        if isinstance(weight, bool) or weight not in (0, 1):  # True == 1 in Python: a JSON true is not 0/1
            raise ChatDataError(
                f"{where}: {name}.loss_weight must be 0 or 1, got {weight!r}", "bad loss_weight"
            )
        content = _text(_field(m, "content", f"{where}: {name}", "messages"), where, f"{name}.content")
        messages.append(_msg(role, content, float(weight)))
    return messages


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
        content = _text(_field(m, "value", f"{where}: {name}", "sharegpt"), where, f"{name}.value")
        messages.append(_msg(SHAREGPT_ROLES[speaker], content))
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


NORMALIZERS = {"messages": from_messages, "sharegpt": from_sharegpt, "alpaca": from_alpaca}


def check_turn_order(messages: list[dict], where: str, stats: ChatStats) -> list[dict]:
    """[system?] user assistant user ... ; a trailing unanswered user turn is trimmed (counted).

    [user "a", assistant "b", user "c"] -> [user "a", assistant "b"]
    """
    start = 1 if messages and messages[0]["role"] == "system" else 0
    for i, m in enumerate(messages[start:], start):
        expected = "user" if (i - start) % 2 == 0 else "assistant"
        if m["role"] != expected:
            after = f"after '{messages[i - 1]['role']}'" if i else "as the first message"
            raise ChatDataError(
                f"{where}: roles out of order: message {i} is '{m['role']}' {after} (expected "
                f"'{expected}'; a conversation is [system] user assistant user ...)",
                "roles out of order",
            )
        if m["role"] == "assistant" and not m["content"].strip():
            raise ChatDataError(f"{where}: message {i}: empty assistant content", "empty assistant content")
        if m["role"] == "user" and not m["content"].strip():
            stats.empty_user_turns += 1
    if len(messages) > start and messages[-1]["role"] == "user":
        messages = messages[:-1]
        stats.trimmed_trailing_user += 1
    if not any(m["role"] == "assistant" for m in messages):
        raise SkippedRecord("no assistant turn")
    return messages


def first_turns(messages: list[dict], max_turns: int | None) -> list[dict]:
    """Keep the system message and the first ``max_turns`` user/assistant exchanges.

    [sys, u1, a1, u2, a2], 1 -> [sys, u1, a1]
    """
    if not max_turns:
        return messages
    start = 1 if messages[0]["role"] == "system" else 0
    return messages[: start + 2 * max_turns]


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
) -> list[dict]:
    """One record -> checked messages with placeholders filled and the system prompt applied."""
    if not isinstance(record, dict):
        raise ChatDataError(
            f"{where}: a record must be a JSON object, got {type(record).__name__}", "record not an object"
        )
    messages = check_turn_order(NORMALIZERS[fmt](record, where), where, stats)
    messages = first_turns(messages, options.max_turns)
    if options.system_prompt and messages[0]["role"] != "system":
        messages = [_msg("system", options.system_prompt), *messages]
    for m in messages:
        m["content"] = fill_placeholders(m["content"], options.placeholders, stats.unfilled_placeholders)
    return messages


def load_file(path: str, fmt: str, options: LoadOptions, stats: ChatStats) -> list[dict]:
    """All usable conversations of one file as rows {messages, source, record}."""
    rows, info = [], {"format": fmt, "records": 0, "kept": 0}
    for where, record in _records(path):
        info["records"] += 1
        if info["records"] == 1 and fmt == "auto":
            fmt = info["format"] = detect_format(record, where)
        try:
            messages = normalize_record(record, where, fmt, options, stats)
        except SkippedRecord as skip:
            stats.skipped[str(skip)] += 1
            continue
        except ChatDataError as err:
            if not options.skip_invalid:
                raise
            stats.skipped[f"invalid: {err.reason}"] += 1
            logger.warning("skipping invalid record: %s", err)
            continue
        rows.append({"messages": messages, "source": path, "record": where})
    if info["records"] == 0:
        raise ChatDataError(f"{path}: no records")
    info["kept"] = len(rows)
    stats.files[path] = info
    return rows


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
