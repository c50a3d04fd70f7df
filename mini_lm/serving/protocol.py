"""OpenAI request models (pydantic, strict) and response builders for the mini_lm server.

Requests are strict: wrong JSON types and unknown fields are 400s naming the field, never coerced
or ignored. Fields OpenAI clients send at neutral values (``frequency_penalty: 0``) are accepted
only at those values, so nothing a client asks for is silently dropped.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from ..generation import MIN_TEMPERATURE, REPETITION_PENALTY_RANGE, SEED_RANGE


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


class ChatMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: Text | list[TextPart]
    name: Text | None = None

    def as_template_message(self) -> dict:
        """{'role': 'developer', 'content': [{'type': 'text', 'text': 'Be brief'}]}
        -> {'role': 'system', 'content': 'Be brief'} (the shape chat templates expect)."""
        text = self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)
        return {"role": "system" if self.role == "developer" else self.role, "content": text}


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

    @model_validator(mode="after")
    def _chat_supported(self):
        if self.logprobs:
            raise ValueError("logprobs are not supported")
        return self

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


def chat_response(model: str, choices: list[tuple[str, str]], use: dict) -> dict:
    """choices: (text, finish_reason) per choice."""
    return {
        "id": new_id("chatcmpl"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": i,
                "message": {"role": "assistant", "content": text},
                "finish_reason": reason,
                "logprobs": None,
            }
            for i, (text, reason) in enumerate(choices)
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
