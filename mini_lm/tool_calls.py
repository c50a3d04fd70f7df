"""The tool-call text format: how a call is written inside a model's answer, and read back out.

    call_text("get_weather", '{"city": "Paris"}')   # -> '{"name": "get_weather", "arguments": {"city": "Paris"}}'
    parse_tool_calls('<tool_call>\\n{"name": "f", "arguments": {}}\\n</tool_call>', {"f"})
    # -> ParsedAnswer(content=None, calls=[ToolCall(name="f", arguments="{}")])

The format is Qwen2.5's (and Hermes'), which mini_lm's ChatML template also writes: each call a
JSON object ``{"name": ..., "arguments": {...}}`` between ``<tool_call>`` and ``</tool_call>``
lines. One home for it: the SFT data (what a from-scratch tokenizer is trained on), the server
(answers -> OpenAI ``tool_calls``) and ``mini-lm chat`` (calls shown readably) all use this.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

OPEN, CLOSE = "<tool_call>", "</tool_call>"
_BLOCK = re.compile(re.escape(OPEN) + r"(.*?)" + re.escape(CLOSE), re.DOTALL)


def call_text(name: str, arguments: str) -> str:
    """The JSON written for one call, as the templates write it; ``arguments`` is the JSON text of
    an object, kept as it is (the templates' ``arguments | tojson`` gives json.dumps' text)."""
    return f'{{"name": "{name}", "arguments": {arguments}}}'


def openai_tool(schema: object) -> dict:
    """A tool schema in OpenAI's wrapping, as the templates and the server expect it:
    {"name": "f", ...} -> {"type": "function", "function": {"name": "f", ...}}; a wrapped one is kept.
    ValueError when it has no function name."""
    wrapped = isinstance(schema, dict) and schema.get("type") == "function"
    function = schema.get("function") if wrapped else schema
    if not isinstance(function, dict) or not isinstance(function.get("name"), str) or not function["name"]:
        raise ValueError("a function schema needs a name")
    return schema if wrapped else {"type": "function", "function": schema}


def template_call(name: str, arguments: str, call_id: str | None = None) -> dict:
    """A call as chat templates read it: arguments an object, not OpenAI's JSON string."""
    call = {"type": "function", "function": {"name": name, "arguments": json.loads(arguments)}}
    return {"id": call_id, **call} if call_id else call


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: str  # JSON text of an object, as OpenAI's function.arguments


@dataclass(frozen=True)
class ParsedAnswer:
    content: str | None  # the text outside the calls (None: nothing but calls)
    calls: list[ToolCall]  # empty: a plain answer


def parse_tool_calls(text: str, known: set[str] | None = None) -> ParsedAnswer:
    """Split a generated answer into its text and its tool calls.

    Every ``<tool_call>`` block must hold a JSON object with a string ``name`` (one of ``known``,
    when given) and object ``arguments``; otherwise — broken JSON, a cut-off block, an unknown
    tool — the whole answer is plain content, never half a call.
    """
    if OPEN not in text:
        return ParsedAnswer(text, [])
    calls = []
    for block in _BLOCK.findall(text):
        call = _parse_call(block, known)
        if call is None:
            return ParsedAnswer(text, [])
        calls.append(call)
    rest = _BLOCK.sub("", text)
    if OPEN in rest or CLOSE in rest:  # an unclosed block (cut off by max_tokens) or a stray tag
        return ParsedAnswer(text, [])
    return ParsedAnswer(rest.strip() or None, calls)


def _parse_call(block: str, known: set[str] | None) -> ToolCall | None:
    try:
        data = json.loads(block)
    except json.JSONDecodeError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        return None
    arguments = data.get("arguments", {})
    if isinstance(arguments, str):  # some models write the arguments as a JSON string
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            return None
    if not isinstance(arguments, dict) or (known is not None and data["name"] not in known):
        return None
    return ToolCall(data["name"], json.dumps(arguments, ensure_ascii=False))


def readable(call: ToolCall) -> str:
    """get_weather(city="Paris", days=2): a call as a person reads it (``mini-lm chat``)."""
    args = ", ".join(
        f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in json.loads(call.arguments).items()
    )
    return f"{call.name}({args})"
