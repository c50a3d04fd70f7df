"""Server limits, and turning a validated request into rows + GenerationSettings within them."""

from __future__ import annotations

import copy
from dataclasses import dataclass

from ..generation import GenerationSettings, context_length, render_chat_prompt
from .errors import APIError
from .protocol import ChatCompletionRequest, CompletionRequest


@dataclass
class ServeLimits:
    max_prompt_tokens: int | None = None  # None: the model's context length
    max_tokens: int = 512  # the largest max_tokens a request may ask for
    default_max_tokens: int = 128  # when a request gives none (clipped to the context left)
    max_body_bytes: int = 1 << 20
    max_concurrent: int = 32  # requests queued or generating; more get 429
    max_batch_size: int = 8  # rows per forward pass (dynamic batching across requests)
    max_rows_per_request: int = 16  # prompts x n
    batch_wait_ms: float = 0.0  # how long a batch waits for more compatible requests

    def __post_init__(self):
        for name in (
            "max_tokens",
            "default_max_tokens",
            "max_body_bytes",
            "max_concurrent",
            "max_batch_size",
            "max_rows_per_request",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.default_max_tokens > self.max_tokens:
            raise ValueError(
                f"default_max_tokens ({self.default_max_tokens}) exceeds max_tokens ({self.max_tokens})"
            )


@dataclass
class Prepared:
    """A request ready for the engine: ``rows`` are the prompts repeated n times each."""

    model_name: str
    rows: list[str]
    prompt_tokens: int
    settings: GenerationSettings
    stops: list[str]
    echo: list[str]  # per row: text put before the completion ('' unless echo=true)


class RequestPreparer:
    """Renders chat prompts, counts tokens and applies the limits. Runs in the threadpool."""

    def __init__(
        self,
        model,
        tokenizer,
        model_name: str,
        limits: ServeLimits,
        defaults: GenerationSettings | None = None,
    ):
        # A private copy: the engine's tokenizer is reconfigured (padding) while generating.
        self.tokenizer = copy.deepcopy(tokenizer)
        self.model_name, self.limits = model_name, limits
        self.defaults = defaults or GenerationSettings()
        self.context = context_length(model)

    def prepare_chat(self, body: ChatCompletionRequest) -> Prepared:
        self._check_model(body.model)
        try:
            prompt = render_chat_prompt(self.tokenizer, [m.as_template_message() for m in body.messages])
        except ValueError as err:  # no chat template: a pretrained-only model
            raise APIError(400, f"{err} (POST /v1/completions continues raw text)", param="messages") from err
        return self._prepare(body, [prompt], echo=False, field="messages")

    def prepare_completion(self, body: CompletionRequest) -> Prepared:
        self._check_model(body.model)
        return self._prepare(body, body.prompts(), echo=body.echo, field="prompt")

    def _check_model(self, name: str | None) -> None:
        if name is not None and name != self.model_name:
            raise APIError(
                404,
                f"model '{name}' is not served here; this server serves '{self.model_name}' (GET /v1/models)",
                param="model",
                code="model_not_found",
            )

    def _prepare(self, body, prompts: list[str], echo: bool, field: str) -> Prepared:
        rows = len(prompts) * body.n
        if rows > self.limits.max_rows_per_request:
            raise APIError(
                400,
                f"this request asks for {rows} completions (prompts x n); the limit is "
                f"{self.limits.max_rows_per_request} (--max-rows-per-request)",
                param="n",
            )
        counts = [len(self.tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
        if min(counts) == 0:
            raise APIError(400, "empty prompt: generation needs at least one token to continue", param=field)
        max_new = self._max_new_tokens(body, max(counts), field)
        return Prepared(
            model_name=self.model_name,
            rows=[p for p in prompts for _ in range(body.n)],
            prompt_tokens=sum(counts),
            settings=self._settings(body, max_new),
            stops=body.stop_strings(),
            echo=[p if echo else "" for p in prompts for _ in range(body.n)],
        )

    def _max_new_tokens(self, body, prompt_tokens: int, field: str) -> int:
        limits, context = self.limits, self.context
        requested, name = body.requested_max_tokens(), body.max_tokens_field()
        caps = [cap for cap in (limits.max_prompt_tokens, context and context - 1) if cap]
        if caps and prompt_tokens > min(caps):
            raise APIError(
                400,
                f"prompt is {prompt_tokens} tokens; this server accepts at most {min(caps)} "
                "(the model's context, or --max-prompt-tokens)",
                param=field,
                code="context_length_exceeded",
            )
        if requested is not None and requested > limits.max_tokens:
            raise APIError(
                400,
                f"{name}={requested} is above this server's limit of {limits.max_tokens} "
                "(mini-lm serve --max-tokens-limit)",
                param=name,
            )
        room = context - prompt_tokens if context else limits.max_tokens
        if requested is None:  # the default shrinks to fit; an explicit request must fit as asked
            requested = min(limits.default_max_tokens, room)
        if requested < 1 or requested > room:
            raise APIError(
                400,
                f"prompt ({prompt_tokens} tokens) + {name} ({requested}) exceeds the "
                f"model's context length of {context} tokens",
                param=name,
                code="context_length_exceeded",
            )
        return requested

    def _settings(self, body, max_new_tokens: int) -> GenerationSettings:
        """OpenAI sampling fields -> GenerationSettings; unset ones take mini_lm's defaults."""
        d = self.defaults
        temperature = d.temperature if body.temperature is None else body.temperature
        try:
            return GenerationSettings(
                max_new_tokens=max_new_tokens,
                do_sample=temperature > 0,
                temperature=temperature or 1.0,
                top_k=d.top_k if body.top_k is None else body.top_k,
                top_p=d.top_p if body.top_p is None else body.top_p,
                repetition_penalty=d.repetition_penalty
                if body.repetition_penalty is None
                else body.repetition_penalty,
                seed=body.seed,
            )
        except ValueError as err:
            raise APIError(400, str(err)) from err
