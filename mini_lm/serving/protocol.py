"""OpenAI request models (pydantic, strict) and response builders for the mini_lm server.

Requests are strict: wrong JSON types and unknown fields are 400s naming the field, never coerced
or ignored. Fields OpenAI clients send at neutral values (``frequency_penalty: 0``) are accepted
only at those values, so nothing a client asks for is silently dropped.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from ..generation import MIN_TEMPERATURE, REPETITION_PENALTY_RANGE, SEED_RANGE
from ..tool_calls import parse_tool_calls, template_call


def _valid_unicode(text: str) -> str:
    """JSON can escape a lone UTF-16 surrogate ("\\ud800"); no tokenizer or UTF-8 reply holds one."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ValueError(
            f"lone surrogate \\u{ord(text[err.start]):04x} at character {err.start}: send valid Unicode text"
        ) from None
    return text


Text = Annotated[str, AfterValidator(_valid_unicode)]  # every string field a request carries
Seed = Annotated[int, Field(ge=SEED_RANGE[0], le=SEED_RANGE[1])]  # beyond it torch.manual_seed fails


class _Strict(BaseModel):
    # JSON has no NaN or Infinity, but Python's parser accepts them: refuse them for every number
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class StreamOptions(_Strict):
    include_usage: bool = False


class TextPart(_Strict):
    type: Literal["text"]
    text: Text


def _valid_json_strings(value: Any) -> Any:
    """Every string inside a JSON value (a tool's parameter schema) checked as ``Text`` is."""
    if isinstance(value, str):
        _valid_unicode(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            _valid_unicode(key)
            _valid_json_strings(item)
    elif isinstance(value, list):
        for item in value:
            _valid_json_strings(item)
    return value


class FunctionDefinition(_Strict):
    name: Annotated[Text, Field(min_length=1, max_length=64)]
    description: Text | None = None
    parameters: Annotated[dict[str, Any], AfterValidator(_valid_json_strings)] | None = None
    strict: bool | None = None

    @field_validator("strict")
    @classmethod
    def _not_strict(cls, value: bool | None) -> bool | None:
        if value:
            raise ValueError("strict function calling (schema-constrained decoding) is not supported")
        return value


class Tool(_Strict):
    type: Literal["function"]
    function: FunctionDefinition

    def as_template_tool(self) -> dict:
        """The schema as chat templates render it ({"type": "function", "function": {name, ...}}),
        in the order training data has it: what a tool-trained model saw."""
        return {
            "type": "function",
            "function": self.function.model_dump(exclude_none=True, exclude={"strict"}),
        }


class FunctionCall(_Strict):
    name: Annotated[Text, Field(min_length=1)]
    arguments: Text  # the JSON text of an object, as OpenAI sends it


class AssistantToolCall(_Strict):
    id: Text | None = None
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Text | list[TextPart] | None = None  # None only beside an assistant's tool_calls
    name: Text | None = None
    tool_calls: list[AssistantToolCall] | None = None
    tool_call_id: Text | None = None  # a tool result: the call it answers

    @model_validator(mode="after")
    def _shape(self):
        if self.tool_calls is not None and self.role != "assistant":
            raise ValueError("tool_calls: only assistant messages carry tool calls")
        if self.tool_call_id is not None and self.role != "tool":
            raise ValueError("tool_call_id: only tool messages (tool results) carry one")
        if self.content is None and not self.tool_calls:
            raise ValueError("content: required (it may be null only next to an assistant's tool_calls)")
        for j, call in enumerate(self.tool_calls or []):
            try:
                arguments = json.loads(call.function.arguments)
            except json.JSONDecodeError as err:
                raise ValueError(f"tool_calls[{j}].function.arguments: not valid JSON ({err.msg})") from None
            if not isinstance(arguments, dict):
                raise ValueError(f"tool_calls[{j}].function.arguments must be the JSON text of an object")
            try:  # JSON text can escape a lone surrogate too ('{"a": "\\ud800"}')
                _valid_json_strings(arguments)
            except ValueError as err:
                raise ValueError(f"tool_calls[{j}].function.arguments: {err}") from None
        return self

    def as_template_message(self) -> dict:
        """{'role': 'developer', 'content': [{'type': 'text', 'text': 'Be brief'}]}
        -> {'role': 'system', 'content': 'Be brief'} (the shape chat templates expect); tool calls
        with their arguments as objects, as templates render them."""
        content = self.content or ""
        text = content if isinstance(content, str) else "".join(p.text for p in content)
        message = {"role": "system" if self.role == "developer" else self.role, "content": text}
        if self.tool_calls:
            message["tool_calls"] = [
                template_call(c.function.name, c.function.arguments, c.id) for c in self.tool_calls
            ]
        if self.tool_call_id is not None:
            message["tool_call_id"] = self.tool_call_id
        return message


def _neutral(value, neutral_values) -> bool:
    return value is None or value in neutral_values


class _SamplingRequest(_Strict):
    model: Text | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)  # 0 means greedy
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=0)  # extension (vLLM, TGI): 0 disables it
    repetition_penalty: float | None = Field(  # extension
        None, ge=REPETITION_PENALTY_RANGE[0], le=REPETITION_PENALTY_RANGE[1]
    )
    n: int = Field(1, ge=1)
    seed: Seed | None = None
    stop: Text | Annotated[list[Text], Field(max_length=4)] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: Text | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None

    @field_validator("temperature")
    @classmethod
    def _samples_or_greedy(cls, value: float | None) -> float | None:
        if value is not None and 0 < value < MIN_TEMPERATURE:
            raise ValueError(
                f"send 0 for greedy decoding or at least {MIN_TEMPERATURE} to sample "
                "(smaller temperatures overflow the sampling distribution)"
            )
        return value

    @model_validator(mode="after")
    def _supported(self):
        for name in ("presence_penalty", "frequency_penalty"):
            if not _neutral(getattr(self, name), (0,)):
                raise ValueError(f"{name} is not supported (use repetition_penalty)")
        if self.logit_bias:
            raise ValueError("logit_bias is not supported")
        if self.stream and self.n > 1:
            raise ValueError("n > 1 cannot be streamed: ask for one choice per streaming request")
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options needs stream: true")
        return self

    def stop_strings(self) -> list[str]:
        """'\\n' -> ['\\n']; ['a', ''] -> ['a'] (an empty stop string would end every answer at once)."""
        stops = [self.stop] if isinstance(self.stop, str) else self.stop or []
        return [s for s in stops if s]

    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatCompletionRequest(_SamplingRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)  # newer name for max_tokens
    logprobs: bool | None = None
    tools: list[Tool] | None = Field(None, max_length=128)
    # "required" and a named function would need constrained decoding: a clear 400, not ignored
    tool_choice: Literal["auto", "none"] | None = None
    parallel_tool_calls: bool | None = None

    @model_validator(mode="after")
    def _chat_supported(self):
        if self.logprobs:
            raise ValueError("logprobs are not supported")
        if self.tools and self.stream:
            raise ValueError(
                "tools cannot be streamed yet: send the request without stream (the answer is parsed "
                "for tool calls once it is complete)"
            )
        if self.tool_choice is not None and not self.tools:
            raise ValueError("tool_choice needs tools")
        if self.parallel_tool_calls is False:
            raise ValueError("parallel_tool_calls: false is not supported (a model may make several calls)")
        names = [tool.function.name for tool in self.tools or []]
        if len(set(names)) < len(names):
            raise ValueError(f"tools: two functions share a name ({sorted(names)})")
        return self

    def template_tools(self) -> list[dict] | None:
        return [tool.as_template_tool() for tool in self.tools] if self.tools else None

    def callable_tools(self) -> set[str] | None:
        """Names of the functions the answer may call (None: do not look for calls)."""
        if not self.tools or self.tool_choice == "none":
            return None
        return {tool.function.name for tool in self.tools}

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def max_tokens_field(self) -> str:
        """The name the client used, for error messages."""
        return "max_completion_tokens" if self.max_completion_tokens else "max_tokens"


class CompletionRequest(_SamplingRequest):
    prompt: Text | list[Text] = Field(description="one prompt, or a batch of prompts")
    echo: bool = False
    logprobs: int | None = None
    suffix: Text | None = None
    best_of: int | None = None

    @model_validator(mode="after")
    def _completion_supported(self):
        if self.logprobs:
            raise ValueError("logprobs are not supported")
        if self.suffix:
            raise ValueError("suffix (insertion) is not supported")
        if not _neutral(self.best_of, (1,)):
            raise ValueError("best_of is not supported")
        if isinstance(self.prompt, list) and not self.prompt:
            raise ValueError("prompt is an empty list")
        if self.stream and isinstance(self.prompt, list) and len(self.prompt) > 1:
            raise ValueError(
                "a batch of prompts cannot be streamed: send them without stream, or one per request"
            )
        return self

    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)

    def requested_max_tokens(self) -> int | None:
        return self.max_tokens

    def max_tokens_field(self) -> str:
        return "max_tokens"


# ---- responses (plain dicts in OpenAI's shapes) ----


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def assistant_message(text: str, finish_reason: str, tools: set[str] | None) -> tuple[dict, str]:
    """An answer -> (OpenAI assistant message, finish_reason). With ``tools``, well-formed
    ``<tool_call>`` blocks calling those tools become ``tool_calls`` (finish_reason "tool_calls");
    anything malformed stays content, as it was generated."""
    parsed = parse_tool_calls(text, tools) if tools else None
    if not parsed or not parsed.calls:
        return {"role": "assistant", "content": text}, finish_reason
    calls = [
        {"id": new_id("call"), "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
        for c in parsed.calls
    ]
    return {"role": "assistant", "content": parsed.content, "tool_calls": calls}, "tool_calls"


def chat_response(
    model: str, choices: list[tuple[str, str]], use: dict, tools: set[str] | None = None
) -> dict:
    """choices: (text, finish_reason) per choice; ``tools``: the callable tools' names."""
    messages = [assistant_message(text, reason, tools) for text, reason in choices]
    return {
        "id": new_id("chatcmpl"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": i, "message": message, "finish_reason": reason, "logprobs": None}
            for i, (message, reason) in enumerate(messages)
        ],
        "usage": use,
        "system_fingerprint": None,
    }


def completion_response(model: str, choices: list[tuple[str, str]], use: dict) -> dict:
    return {
        "id": new_id("cmpl"),
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": i, "text": text, "finish_reason": reason, "logprobs": None}
            for i, (text, reason) in enumerate(choices)
        ],
        "usage": use,
        "system_fingerprint": None,
    }


class ChunkWriter:
    """Builds the ``data: {...}`` events of one streamed response (chat or text completion)."""

    def __init__(self, model: str, chat: bool):
        self.chat = chat
        self.head = {
            "id": new_id("chatcmpl" if chat else "cmpl"),
            "object": "chat.completion.chunk" if chat else "text_completion",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": None,
        }

    def _choice(self, text: str | None, finish_reason: str | None, first: bool = False) -> dict:
        if not self.chat:
            return {"index": 0, "text": text or "", "finish_reason": finish_reason, "logprobs": None}
        delta = {"role": "assistant", "content": ""} if first else ({"content": text} if text else {})
        return {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}

    def opening(self) -> dict | None:
        """Chat streams open with the assistant role, as OpenAI's do."""
        return {**self.head, "choices": [self._choice(None, None, first=True)]} if self.chat else None

    def piece(self, text: str) -> dict:
        return {**self.head, "choices": [self._choice(text, None)]}

    def finish(self, finish_reason: str) -> dict:
        return {**self.head, "choices": [self._choice(None, finish_reason)]}

    def usage(self, use: dict) -> dict:
        return {**self.head, "choices": [], "usage": use}
