"""Likelihood scoring of continuations: which of these answers does the model find likeliest?

    scores = score_choices(model, tokenizer, ["王伟出生在"], [["成都", "北京", "厦门"]])
    scores[0][1].logprob, scores[0][1].n_tokens, scores[0][1].per_char   # "北京" given the prompt
    best_choice(scores[0], norm="char")                                   # index of the winner

For each (prompt, continuation) pair the score is the summed log-probability of the
continuation's tokens only, each given the prompt and the continuation tokens before it; the
prompt's own tokens are never scored. Prompts are text as the model reads it: a raw prompt, or
a chat prompt rendered with the generation prompt (``generation.render_chat_prompt``).

Tokenization follows lm-evaluation-harness (``HFLM._encode_pair``), so the two agree token for
token: trailing whitespace of the prompt moves to the front of the continuation ("born in " +
"Chengdu" is scored as " Chengdu", the token the model saw in training), then prompt +
continuation is encoded as one string and split after as many tokens as the prompt alone
encodes to. Encoding the whole rather than the parts keeps the continuation's first token what
the model would read in running text. No special tokens are added (as ``mini_lm.generation``
encodes prompts); an empty prompt is conditioned on the tokenizer's bos (else eos) token, as
lm-eval does. A prompt too long for the model's positions loses tokens on the left
(``ChoiceScore.truncated`` says so); a continuation that alone does not fit is an error.

Normalisations (``best_choice(norm=...)``), named as lm-eval's multiple-choice metrics:
``sum`` (its ``acc``: the raw summed log-likelihood, favours short choices), ``char`` (its
``acc_norm``: divided by the continuation's length in characters), ``byte`` (``acc_bytes``:
by UTF-8 bytes) and ``token`` (mean per token; depends on the tokenizer, so not comparable
across models).

Causal LMs (GPT-2, Qwen2) score many prompt+choice rows per forward: rows left-padded so every
continuation ends in the last column, explicit position ids so padding shifts nothing, and only
the last columns' logits computed (``logits_to_keep``). The BERT adapter predicts one next token
per forward, so it gets one row per continuation token (its context: the prompt and the
continuation so far), batched the same way.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .generation import context_length

NORMS = ("sum", "char", "byte", "token")


@dataclass(frozen=True)
class ChoiceScore:
    logprob: float  # sum over the continuation's tokens of log p(token | everything before it)
    n_tokens: int  # continuation tokens scored
    n_chars: int  # len(continuation) as given: lm-eval's acc_norm divides by this
    n_bytes: int  # its UTF-8 length: lm-eval's acc_bytes divides by this
    greedy: bool  # every continuation token was the model's argmax (lm-eval's is_greedy)
    truncated: bool = False  # the prompt lost tokens on the left to fit the model's positions

    @property
    def per_token(self) -> float:
        return self.logprob / self.n_tokens

    @property
    def per_char(self) -> float:
        return self.logprob / max(self.n_chars, 1)

    @property
    def per_byte(self) -> float:
        return self.logprob / max(self.n_bytes, 1)

    def value(self, norm: str = "sum") -> float:
        """The score under one of ``NORMS``: sum, char, byte or token."""
        if norm not in NORMS:
            raise ValueError(f"unknown normalisation {norm!r}; choose from {', '.join(NORMS)}")
        return {
            "sum": self.logprob,
            "char": self.per_char,
            "byte": self.per_byte,
            "token": self.per_token,
        }[norm]


def best_choice(scores: list[ChoiceScore], norm: str = "sum") -> int:
    """Index of the highest-scoring choice under ``norm`` (ties: the first, as numpy.argmax)."""
    values = [s.value(norm) for s in scores]
    return values.index(max(values))


def encode_pair(tokenizer, prompt: str, continuation: str) -> tuple[list[int], list[int]]:
    """(prompt ids, continuation ids), split as lm-eval splits them (see the module docstring):
    ("Wei Wang was born in ", "Chengdu") -> (ids of "Wei Wang was born in", ids of " Chengdu")."""
    if not continuation:
        raise ValueError(f"empty continuation after prompt {prompt[-40:]!r}: every choice needs text")
    stripped = prompt.rstrip()
    continuation, prompt = prompt[len(stripped) :] + continuation, stripped
    if not prompt:
        prefix = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        if prefix is None:
            raise ValueError(
                "an empty prompt needs a bos or eos token to condition on; this tokenizer has neither"
            )
        ids = tokenizer.encode(continuation, add_special_tokens=False)
        return ([prefix], ids) if ids[:1] != [prefix] else (ids[:1], ids[1:])
    whole = tokenizer.encode(prompt + continuation, add_special_tokens=False)
    n_prompt = len(tokenizer.encode(prompt, add_special_tokens=False))
    return whole[:n_prompt], whole[n_prompt:]


@torch.no_grad()
def score_choices(
    model, tokenizer, prompts: list[str], choices: list[list[str]], batch_size: int = 32
) -> list[list[ChoiceScore]]:
    """Score every choice of every prompt: ``result[i][j]`` is ``choices[i][j]`` after ``prompts[i]``.

    ``batch_size`` rows (prompt + one choice; for the BERT adapter, one continuation token) go
    through each forward. Results do not depend on ``batch_size`` beyond float rounding.
    """
    if len(prompts) != len(choices):
        raise ValueError(f"{len(prompts)} prompts but {len(choices)} lists of choices")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    rows = []  # (question, choice, prompt ids, continuation ids, continuation text)
    for i, (prompt, options) in enumerate(zip(prompts, choices)):
        if not options:
            raise ValueError(f"prompt {i} ({prompt[-40:]!r}) has no choices")
        for j, text in enumerate(options):
            ctx, cont = encode_pair(tokenizer, prompt, text)
            if not cont:
                raise ValueError(f"choice {text!r} of prompt {i} encodes to no tokens after the prompt")
            rows.append((i, j, ctx, cont, text))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    was_training = model.training
    model.eval()
    try:
        scorer = _score_per_token if _one_token_per_forward(model) else _score_causal
        scored = scorer(model, [(ctx, cont) for _, _, ctx, cont, _ in rows], batch_size, pad)
    finally:
        model.train(was_training)
    out: list[list[ChoiceScore]] = [[None] * len(options) for options in choices]  # type: ignore[list-item]
    for (i, j, _, cont, text), (logprob, greedy, truncated) in zip(rows, scored):
        out[i][j] = ChoiceScore(
            logprob=logprob,
            n_tokens=len(cont),
            n_chars=len(text),
            n_bytes=len(text.encode("utf-8")),
            greedy=greedy,
            truncated=truncated,
        )
    return out


def _one_token_per_forward(model) -> bool:
    from .models.bert_adapter import BertNextTokenLM

    return isinstance(model, BertNextTokenLM)


def _score_causal(model, pairs, batch_size: int, pad: int) -> list[tuple[float, bool, bool]]:
    """(sum log p, greedy, truncated) per (prompt ids, continuation ids), longest rows batched first.

    Rows that read the same tokens and differ only in the last one they are scored on (one-token
    choices "A" / "B" / "C" / "D" after one prompt, as lm-eval caches them) share one forward row:
    a 4-choice benchmark question costs one row, not four."""
    limit = context_length(model)
    inputs = []  # (input ids, n continuation tokens, truncated)
    for ctx, cont in pairs:
        ids = ctx + cont
        if limit is not None and len(cont) > limit:
            raise ValueError(
                f"a continuation of {len(cont)} tokens does not fit the model's {limit} positions"
            )
        truncated = limit is not None and len(ids) > limit + 1
        inputs.append((ids[-(limit + 1) :] if truncated else ids, len(cont), truncated))
    sharing: dict[tuple[tuple[int, ...], int], list[int]] = {}  # (tokens read, n scored) -> rows
    for k, (ids, n, _) in enumerate(inputs):
        sharing.setdefault((tuple(ids[:-1]), n), []).append(k)
    order = sorted(sharing, key=lambda key: -len(key[0]))  # like lengths share a batch
    results: list[tuple[float, bool, bool]] = [None] * len(inputs)  # type: ignore[list-item]
    for start in range(0, len(order), batch_size):
        keys = order[start : start + batch_size]
        rows = [(b, k) for b, key in enumerate(keys) for k in sharing[key]]  # (forward row, pair)
        targets = [inputs[k][0][-inputs[k][1] :] for _, k in rows]
        sums, greedy = _causal_batch(model, [list(x) for x, _ in keys], [b for b, _ in rows], targets, pad)
        for (_, k), s, g in zip(rows, sums, greedy):
            results[k] = (s, g, inputs[k][2])
    return results


def _causal_batch(
    model, inputs: list[list[int]], row_of: list[int], targets: list[list[int]], pad: int
) -> tuple[list[float], list[bool]]:
    """One forward over ``inputs``; then, per target, its forward row ``row_of[t]`` scored on
    ``targets[t]`` (the last len(targets[t]) next tokens of that row) -> sums and greedy flags."""
    keep = max(len(t) for t in targets)
    ids, mask = _left_pad(inputs, pad)  # (B, T)
    scored = torch.full((len(targets), keep), -100, dtype=torch.long)  # (R, K), right-aligned
    for r, t in enumerate(targets):
        scored[r, keep - len(t) :] = torch.tensor(t)
    positions = _position_ids(mask)
    kwargs = (
        {"logits_to_keep": keep} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}
    )
    device = model.device
    logits = model(
        input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=positions.to(device), **kwargs
    ).logits[:, -keep:]  # (B, K, V)
    return _gather(logits, scored.to(device), torch.tensor(row_of, device=device))


def _left_pad(rows: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Ids and attention mask, (B, T), every row ending in the last column."""
    width = max(len(x) for x in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for r, x in enumerate(rows):
        ids[r, width - len(x) :], mask[r, width - len(x) :] = torch.tensor(x), 1
    return ids, mask


def _position_ids(mask: torch.Tensor) -> torch.Tensor:
    """Positions that start at 0 on each row's first real token, whatever the left padding."""
    return (mask.cumsum(1) - 1).clamp(min=0)


def _gather(
    logits: torch.Tensor, targets: torch.Tensor, row_of: torch.Tensor | None = None
) -> tuple[list[float], list[bool]]:
    """(B, K, V) logits and (R, K) targets (-100: not scored), target r read from logits row
    ``row_of[r]`` (default: row r) -> per-target sum of log p, all-argmax flag."""
    logprobs = F.log_softmax(logits.float(), dim=-1)
    rows = torch.arange(len(targets), device=logits.device) if row_of is None else row_of
    scored = targets != -100
    safe = targets.clamp(min=0)
    columns = torch.arange(targets.shape[1], device=logits.device)
    picked = logprobs[rows[:, None], columns[None, :], safe]  # (R, K), without an (R, K, V) copy
    sums = torch.where(scored, picked, torch.zeros_like(picked)).sum(1)
    hits = (logprobs.argmax(-1)[rows] == safe) | ~scored
    return sums.tolist(), hits.all(1).tolist()


def _score_per_token(model, pairs, batch_size: int, pad: int) -> list[tuple[float, bool, bool]]:
    """The BERT adapter: one forward row per continuation token, its context everything before it."""
    window = model.window
    steps = [(p, ctx + cont[:j], cont[j]) for p, (ctx, cont) in enumerate(pairs) for j in range(len(cont))]
    sums, greedy = [0.0] * len(pairs), [True] * len(pairs)
    for start in range(0, len(steps), batch_size):
        batch = steps[start : start + batch_size]
        ids, mask = _left_pad(
            [c[-window:] for _, c, _ in batch], pad
        )  # (B, W): the adapter wants left padding
        targets = torch.tensor([[t] for _, _, t in batch], device=model.device)  # (B, 1)
        logits = model(
            input_ids=ids.to(model.device), attention_mask=mask.to(model.device)
        ).logits  # (B, 1, V)
        for (p, _, _), s, g in zip(batch, *_gather(logits, targets)):
            sums[p] += s
            greedy[p] = greedy[p] and g
    return [(s, g, len(ctx) + len(cont) - 1 > window) for s, g, (ctx, cont) in zip(sums, greedy, pairs)]
