"""One generation path for every model mini_lm trains: batched, left-padded, KV-cached, seeded.

    settings = GenerationSettings(do_sample=False, max_new_tokens=20)
    [r.text for r in generate(model, tokenizer, ["中国的历史", "人工智能是"], settings)]

Decoding defaults follow seed 000 (temperature 0.8, top_k 50, 60 new tokens). Repetition is
deliberately *not* hidden (no no_repeat_ngram_size): seeing it is the point of the probes.

Sampling (temperature, top-k, top-p, repetition penalty) is HF ``generate``'s own logits
processors; every family, the BERT adapter included, exposes next-token logits to it. The
adapter ignores ``use_cache`` (its bidirectional window is re-encoded at every step).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Generator, Sequence
from dataclasses import asdict, dataclass, field

import torch

from .tokenization import stop_token_ids

# Below MIN_TEMPERATURE sampling is greedy in all but name, and far below it logits / temperature
# overflow float32 into NaN probabilities; a repetition penalty outside its range does the same.
MIN_TEMPERATURE = 1e-5
REPETITION_PENALTY_RANGE = (0.01, 100.0)
SEED_RANGE = (-(2**63), 2**64 - 1)  # what torch.manual_seed accepts


@dataclass
class GenerationSettings:
    max_new_tokens: int = 60
    do_sample: bool = True
    temperature: float = 0.8
    top_k: int = 50
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    seed: int | None = 0
    stop_token_ids: list[int] | None = field(
        default=None, metadata={"help": "Default: eos, <|endoftext|>, <|im_end|>."}
    )
    min_new_tokens: int = field(
        default=0, metadata={"help": "Ignore stop tokens before this many (benchmarks)."}
    )
    use_cache: bool = field(
        default=True, metadata={"help": "KV cache for causal LMs (off only to measure it)."}
    )

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.do_sample and not MIN_TEMPERATURE <= self.temperature < float("inf"):
            raise ValueError(
                f"temperature must be >= {MIN_TEMPERATURE} when sampling (use greedy decoding for "
                f"less), got {self.temperature}"
            )
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 disables it), got {self.top_k}")
        low, high = REPETITION_PENALTY_RANGE
        if not low <= self.repetition_penalty <= high:
            raise ValueError(
                f"repetition_penalty must be in [{low}, {high}] (1 is none), got {self.repetition_penalty}"
            )
        if self.seed is not None and not SEED_RANGE[0] <= self.seed <= SEED_RANGE[1]:
            raise ValueError(f"seed must be in [-2**63, 2**64 - 1] (torch's range), got {self.seed}")
        if not 0 <= self.min_new_tokens <= self.max_new_tokens:
            raise ValueError(
                f"min_new_tokens must be in [0, max_new_tokens={self.max_new_tokens}], "
                f"got {self.min_new_tokens}"
            )

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class GenerationResult:
    prompt: str
    text: str  # the continuation only, special tokens removed
    token_ids: list[int]  # new tokens, up to and including the stop token
    stopped: bool  # a stop token was emitted (False: hit max_new_tokens)
    seconds: float  # wall time of the batch this prompt was in


def load_for_generation(model_dir: str, device: str | None = None, dtype: str = "auto"):
    """(model, tokenizer) from any dir a recipe saved: the one loader the CLI, probes and serving use.

    Families with their own model class (the BERT adapter) hook in here, so callers never branch.
    """
    from transformers import AutoModelForCausalLM

    from . import models  # noqa: F401  registers the BERT adapter's model type with the Auto classes
    from .tokenization import load_tokenizer

    tokenizer = load_tokenizer(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
    if device:
        model.to(device)
    model.eval()
    return model, tokenizer


def context_length(model) -> int | None:
    """Most tokens (prompt + continuation) the model attends to; None when its window slides (no limit).

    GPT-2 / Qwen2: ``max_position_embeddings``. The BERT adapter reads only its last
    ``context_window`` tokens, so any prompt and any length fit.
    """
    if getattr(model, "slides_window", False):
        return None
    return getattr(model.config, "max_position_embeddings", None)


def render_chat_prompt(tokenizer, messages: list[dict]) -> str:
    """Messages -> prompt text ending with the assistant header, via the tokenizer's chat template."""
    if not tokenizer.chat_template:
        raise ValueError("tokenizer has no chat template: configure one or use raw-continuation prompts")
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def _stops_and_pad(tokenizer, settings: GenerationSettings) -> tuple[list[int], int]:
    stops = settings.stop_token_ids or stop_token_ids(tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (stops or [None])[0]
    if pad is None:
        raise ValueError("the tokenizer has neither a pad token nor a stop token to pad batches with")
    return stops, pad


def _generate_kwargs(settings: GenerationSettings, stops: list[int], pad: int) -> dict:
    """GenerationSettings -> keyword arguments of HF ``model.generate``."""
    sampling = (
        dict(temperature=settings.temperature, top_k=settings.top_k or None, top_p=settings.top_p)
        if settings.do_sample
        else {}
    )
    return dict(
        max_new_tokens=settings.max_new_tokens,
        min_new_tokens=settings.min_new_tokens or None,
        do_sample=settings.do_sample,
        repetition_penalty=settings.repetition_penalty,
        eos_token_id=stops or None,
        pad_token_id=pad,
        use_cache=settings.use_cache,
        **sampling,
    )


def _encode(tokenizer, prompts: list[str], device) -> dict:
    """Ids and attention mask, padded on the tokenizer's side (token_type_ids, which some add, unused)."""
    enc = tokenizer(
        prompts, return_tensors="pt", padding=True, add_special_tokens=False, return_token_type_ids=False
    )
    return {k: v.to(device) for k, v in enc.items()}


@torch.no_grad()
def generate(
    model,
    tokenizer,
    prompts: list[str],
    settings: GenerationSettings | None = None,
    batch_size: int = 8,
    cancel: Sequence[threading.Event] | None = None,
) -> list[GenerationResult]:
    """Continue each prompt. Same prompts + settings + batch_size -> same outputs.

    ``cancel`` holds one event per prompt (a server's requests share a batch): setting one ends
    that row at its next token, its result keeping the tokens made so far, while the other rows
    generate on exactly as they would have.
    """
    settings = settings or GenerationSettings()
    stops, pad = _stops_and_pad(tokenizer, settings)
    was_training, side = model.training, tokenizer.padding_side
    model.eval()
    tokenizer.padding_side = "left"  # new tokens must follow the prompt directly in every row
    results: list[GenerationResult] = []
    try:
        for start in range(0, len(prompts), batch_size):
            batch = prompts[start : start + batch_size]
            events = cancel[start : start + batch_size] if cancel is not None else None
            results.extend(_generate_batch(model, tokenizer, batch, settings, stops, pad, events))
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return results


def _generate_batch(
    model, tokenizer, prompts, settings, stops, pad, cancel=None, streamer=None
) -> list[GenerationResult]:
    from transformers import StoppingCriteriaList

    enc = _encode(tokenizer, prompts, model.device)
    prompt_length = enc["input_ids"].shape[1]
    if settings.seed is not None:
        torch.manual_seed(settings.seed)
    stopper = _row_cancellation(cancel, prompt_length) if cancel is not None else None
    began = time.perf_counter()
    out = model.generate(
        **enc,
        **_generate_kwargs(settings, stops, pad),
        stopping_criteria=StoppingCriteriaList([stopper]) if stopper is not None else None,
        streamer=streamer,
    )  # (B, T_prompt + T_new)
    seconds = time.perf_counter() - began
    new_rows = out[:, prompt_length:].tolist()
    if stopper is not None:  # a cancelled row is padded from where it ended
        new_rows = [row[: stopper.ended.get(i, len(row))] for i, row in enumerate(new_rows)]
    return [_to_result(tokenizer, prompt, row, stops, seconds) for prompt, row in zip(prompts, new_rows)]


def _to_result(tokenizer, prompt: str, row: list[int], stops: list[int], seconds: float) -> GenerationResult:
    """New ids of one row -> result cut after the first stop id (padding after it dropped)."""
    cut = next((i + 1 for i, tok in enumerate(row) if tok in stops), None)
    new = row[:cut] if cut else row
    return GenerationResult(
        prompt=prompt,
        text=tokenizer.decode(new, skip_special_tokens=True),
        token_ids=new,
        stopped=cut is not None,
        seconds=seconds,
    )


def stream(
    model,
    tokenizer,
    prompt: str,
    settings: GenerationSettings | None = None,
    cancel: threading.Event | None = None,
) -> Generator[str, None, GenerationResult]:
    """Yield the continuation of one prompt as text pieces while it is generated (for chat / SSE).

    Runs ``generate`` in a worker thread feeding a ``TextIteratorStreamer``; the pieces joined
    equal ``generate(...)[0].text`` for the same settings and seed. The generator's return value
    (``result = yield from stream(...)``) is that ``GenerationResult`` (token ids, stop reason).
    Setting ``cancel`` ends generation at the next token (a server whose client went away).
    """
    from transformers import TextIteratorStreamer

    settings = settings or GenerationSettings()
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    errors: list[BaseException] = []
    results: list[GenerationResult] = []

    def work():
        try:
            results.append(_generate_streaming(model, tokenizer, prompt, settings, streamer, cancel))
        except BaseException as err:  # surfaced in the caller's thread below
            errors.append(err)
            streamer.end()

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    yield from streamer
    worker.join()
    if errors:
        raise errors[0]
    return results[0]


def _row_cancellation(events: Sequence[threading.Event], prompt_length: int):
    """Stopping criteria that end row i once ``events[i]`` is set (checked after each token);
    ``ended`` maps each row so ended to the number of new tokens it had made."""
    from transformers import StoppingCriteria

    class RowCancellation(StoppingCriteria):
        def __init__(self):
            self.ended: dict[int, int] = {}
            self.done: torch.Tensor | None = None  # (B,) bool, written only when a row ends

        def __call__(self, input_ids, scores, **kwargs) -> torch.Tensor:
            if self.done is None:
                self.done = torch.zeros(len(events), dtype=torch.bool, device=input_ids.device)
            for i, event in enumerate(events):
                if i not in self.ended and event.is_set():
                    self.ended[i] = input_ids.shape[1] - prompt_length
                    self.done[i] = True
            return self.done

    return RowCancellation()


@torch.no_grad()
def _generate_streaming(model, tokenizer, prompt, settings, streamer, cancel=None) -> GenerationResult:
    stops, pad = _stops_and_pad(tokenizer, settings)
    was_training = model.training
    model.eval()
    events = [cancel] if cancel is not None else None
    try:
        return _generate_batch(model, tokenizer, [prompt], settings, stops, pad, events, streamer)[0]
    finally:
        model.train(was_training)
