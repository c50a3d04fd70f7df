"""Padded vs padding-free packed SFT batches: same per-token loss and gradients on tiny models, with
negative controls (wrong position_ids, or a KV cache that makes transformers skip the packed mask);
the runtime guard that catches leaking attention; bin packing; the FlashAttention flattening."""

import random
from types import SimpleNamespace

import pytest
import torch
from datasets import Dataset
from transformers.modeling_flash_attention_utils import prepare_fa_kwargs_from_position_ids

from mini_lm.config import ModelArguments
from mini_lm.data.sft_packing import (
    FlattenedCollator,
    PackedAttentionError,
    PackedCollator,
    SFTCollator,
    best_fit_decreasing,
    check_packed_attention,
    make_sft_collator,
    pack_conversations,
    split_packed_row,
)
from mini_lm.labels import IGNORE_INDEX
from mini_lm.models import build_model

PAD = 0


def conversations(seed: int, n: int = 10, vocab: int = 300) -> list[dict]:
    """Random 'conversations': a prompt (labels -100) then an answer (labels = ids)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        prompt = [rng.randrange(3, vocab) for _ in range(rng.randrange(2, 12))]
        answer = [rng.randrange(3, vocab) for _ in range(rng.randrange(1, 15))]
        out.append({"input_ids": prompt + answer, "labels": [IGNORE_INDEX] * len(prompt) + answer})
    return out


def tiny_model(tokenizer, family: str, attn: str):
    torch.manual_seed(0)
    args = ModelArguments(
        model_family=family,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2 if family == "qwen2" else None,
        max_position_embeddings=128,
        attn_implementation=attn,
    )
    return build_model(args, tokenizer).train()  # train mode: use_cache is on by default there too


def token_losses(model, batch, boundaries: torch.Tensor | None = None) -> dict[tuple, torch.Tensor]:
    """Per-token loss of every supervised token, keyed by (conversation ids, position in it).

    Conversations are found where ``boundaries`` (default: the batch's position_ids) restart at 0."""
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    logits = model(**inputs).logits  # (B, T, V)
    losses = torch.nn.functional.cross_entropy(
        logits[:, :-1].transpose(1, 2), batch["labels"][:, 1:], ignore_index=IGNORE_INDEX, reduction="none"
    )  # (B, T-1)
    out = {}
    positions = boundaries if boundaries is not None else batch.get("position_ids")
    for r in range(batch["input_ids"].shape[0]):
        ids = batch["input_ids"][r].tolist()
        pos = positions[r].tolist() if positions is not None else list(range(len(ids)))
        starts = [i for i, p in enumerate(pos) if p == 0] + [len(ids)]
        for a, b in zip(starts, starts[1:]):
            key = tuple(ids[a:b])
            for t in range(a, b - 1):
                if batch["labels"][r, t + 1] != IGNORE_INDEX:
                    out[(key, t - a)] = losses[r, t]
    return out


def strip_padding(losses: dict, features: list[dict]) -> dict:
    """Padded rows carry pad tokens in their key: map back to the unpadded conversation."""
    by_prefix = {}
    for (key, t), value in losses.items():
        conv = next(
            tuple(f["input_ids"]) for f in features if key[: len(f["input_ids"])] == tuple(f["input_ids"])
        )
        by_prefix[(conv, t)] = value
    return by_prefix


def loss_and_grads(model, losses: dict, keys) -> tuple[torch.Tensor, dict]:
    model.zero_grad()
    total = torch.stack([losses[k] for k in keys]).mean()
    total.backward()
    return total.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def packed_batch(features, wrong: str | None = None):
    rows = pack_conversations(Dataset.from_list(features), max_length=48)
    batch = PackedCollator(PAD)(list(rows))
    if wrong == "positions":  # one running position per row: no restart at conversation starts
        batch["position_ids"] = torch.arange(batch["input_ids"].shape[1]).expand_as(batch["input_ids"])
    if wrong == "kv_cache":  # transformers skips the packed-sequence mask when a cache is built
        batch["use_cache"] = True
    return batch


@pytest.mark.parametrize("family,attn", [("qwen2", "sdpa"), ("qwen2", "eager"), ("gpt2", "sdpa")])
def test_packed_equals_padded_per_token_loss_and_gradients(tiny_tokenizer, family, attn):
    model = tiny_model(tiny_tokenizer, family, attn)
    features = conversations(seed=1)
    padded = strip_padding(token_losses(model, SFTCollator(PAD)(features)), features)
    batch = packed_batch(features)
    assert batch["input_ids"].shape[0] < len(features)  # several conversations share a row
    packed = token_losses(model, batch)
    keys = sorted(padded)
    assert set(packed) == set(padded) and len(keys) == sum(
        sum(x != IGNORE_INDEX for x in f["labels"]) for f in features
    )
    per_token = torch.stack([(packed[k] - padded[k]).abs() for k in keys])
    assert per_token.max() < 1e-5, per_token.max()
    loss_padded, grads_padded = loss_and_grads(model, padded, keys)
    loss_packed, grads_packed = loss_and_grads(model, packed, keys)
    assert torch.allclose(loss_packed, loss_padded, atol=1e-6)
    assert grads_packed.keys() == grads_padded.keys() and len(grads_packed) > 5
    for name in grads_padded:
        assert torch.allclose(grads_packed[name], grads_padded[name], atol=1e-6, rtol=1e-4), name

    # negative controls: the same comparison must fail when attention can cross conversations
    for wrong in ("positions", "kv_cache"):
        bad = token_losses(model, packed_batch(features, wrong), boundaries=batch["position_ids"])
        assert set(bad) == set(padded)
        diff = max((bad[k] - padded[k]).abs().item() for k in keys)
        assert diff > 1e-3, (wrong, diff)
        _, grads_bad = loss_and_grads(model, bad, keys)
        assert any(not torch.allclose(grads_bad[n], grads_padded[n], atol=1e-5) for n in grads_padded), wrong


@pytest.fixture
def flex_without_inductor(monkeypatch):
    """transformers torch.compile()s flex_attention; on CPU inductor then spends 30-50 s per shape
    building C++ kernels. Dynamo's eager backend runs the same flex math (the mask path under test)
    without that; the compiled GPU kernel is bench/gpu_check.py's business."""
    import functools

    real_compile = torch.compile

    def eager_compile(model=None, **kwargs):
        kwargs = {k: v for k, v in kwargs.items() if k not in ("mode", "options")} | {"backend": "eager"}
        return (
            real_compile(model, **kwargs) if model is not None else functools.partial(eager_compile, **kwargs)
        )

    monkeypatch.setattr(torch, "compile", eager_compile)


@torch.no_grad()  # torch has no flex_attention backward on CPU; the GPU kit (bench/gpu_check.py) runs it
def test_flex_attention_packed_rows_match_padded(tiny_tokenizer, flex_without_inductor):
    """attn_implementation=flex_attention (what auto picks for packed rows on CUDA without flash_attn):
    transformers turns the restarting position_ids into a document BlockMask. Reference: the same
    weights on SDPA with padded batches."""
    model = tiny_model(tiny_tokenizer, "qwen2", "flex_attention")
    assert model.config._attn_implementation == "flex_attention"
    reference = tiny_model(tiny_tokenizer, "qwen2", "sdpa")  # same seed: same weights
    features = conversations(seed=4)
    padded = strip_padding(token_losses(reference, SFTCollator(PAD)(features)), features)
    batch = packed_batch(features)
    packed = token_losses(model, batch)
    assert set(packed) == set(padded)
    assert max((packed[k] - padded[k]).abs().item() for k in padded) < 1e-5
    assert isinstance(
        make_sft_collator(model, SimpleNamespace(pad_token_id=PAD), packing=True), PackedCollator
    )
    # negative control: without restarting positions flex gets no document mask
    bad = token_losses(model, packed_batch(features, "positions"), boundaries=batch["position_ids"])
    assert max((bad[k] - padded[k]).abs().item() for k in padded) > 1e-3


def test_flattened_batch_for_flash_attention(tiny_tokenizer):
    """The FA2 path: one (1, total) row; cu_seq_lens are the conversation boundaries, the same ones
    transformers derives from position_ids; on SDPA the flattened row still matches padded losses."""
    features = conversations(seed=2, n=6)
    rows = list(pack_conversations(Dataset.from_list(features), max_length=40))
    batch = FlattenedCollator()(rows)
    lengths = [len(c["input_ids"]) for row in rows for c in split_packed_row(row)]
    assert batch["input_ids"].shape == (1, sum(lengths)) and batch["use_cache"] is False
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    assert torch.equal(batch["cu_seq_lens_q"], cu) and batch["max_length_q"] == max(lengths)
    (cu_q, _), (max_q, _) = prepare_fa_kwargs_from_position_ids(batch["position_ids"])
    assert torch.equal(cu_q.to(torch.int32), cu) and int(max_q) == max(lengths)

    model = tiny_model(tiny_tokenizer, "qwen2", "sdpa")
    padded = strip_padding(token_losses(model, SFTCollator(PAD)(features)), features)
    flat = {k: v for k, v in batch.items() if not k.startswith(("cu_seq", "max_length"))}
    packed = token_losses(model, flat)
    assert set(packed) == set(padded)
    assert max((packed[k] - padded[k]).abs().item() for k in padded) < 1e-5


def test_runtime_check_passes_and_catches_leaks(tiny_tokenizer):
    for family in ("qwen2", "gpt2"):
        model = tiny_model(tiny_tokenizer, family, "sdpa")
        assert check_packed_attention(model, PackedCollator(PAD)) < 1e-4
        assert model.training  # restored after the check

        def leaky(features):  # what a collator without use_cache=False would produce
            return {**PackedCollator(PAD)(features), "use_cache": True}

        with pytest.raises(PackedAttentionError, match="attention crosses conversation boundaries"):
            check_packed_attention(model, leaky)


def test_padded_collator():
    batch = SFTCollator(PAD, pad_to_multiple_of=4)(
        [{"input_ids": [5, 6, 7], "labels": [IGNORE_INDEX, 6, 7]}, {"input_ids": [8], "labels": [8]}]
    )
    assert batch["input_ids"].tolist() == [[5, 6, 7, 0], [8, 0, 0, 0]]
    assert batch["labels"].tolist() == [
        [IGNORE_INDEX, 6, 7, IGNORE_INDEX],
        [8, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX],
    ]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 0, 0, 0]] and batch["use_cache"] is False


def test_packed_collator_pads_with_a_separate_segment():
    rows = [
        {
            "input_ids": [1, 2, 3, 4, 5],
            "labels": [IGNORE_INDEX, 2, 3, IGNORE_INDEX, 5],
            "position_ids": [0, 1, 2, 0, 1],
        },
        {"input_ids": [6, 7], "labels": [IGNORE_INDEX, 7], "position_ids": [0, 1]},
    ]
    batch = PackedCollator(PAD)(rows)
    assert "attention_mask" not in batch
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1], [0, 1, 0, 1, 2]]
    assert batch["labels"][1].tolist() == [IGNORE_INDEX, 7, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX]


def test_pack_conversations_keeps_every_token():
    features = conversations(seed=3, n=40)
    rows = pack_conversations(Dataset.from_list(features), max_length=32)
    assert all(len(r) <= 32 for r in rows["input_ids"])
    unpacked = [c for row in rows for c in split_packed_row(row)]
    assert sorted(map(lambda c: c["input_ids"], unpacked)) == sorted(f["input_ids"] for f in features)
    labels = {tuple(f["input_ids"]): f["labels"] for f in features}
    for c in unpacked:  # labels travel with their tokens; the first of each conversation is -100
        assert c["labels"] == [IGNORE_INDEX] + labels[tuple(c["input_ids"])][1:]


def test_best_fit_decreasing():
    assert best_fit_decreasing([5, 3, 4, 2], 8) == [[0, 1], [2, 3]]
    rng = random.Random(0)
    lengths = [rng.randrange(1, 100) for _ in range(300)]
    bins = best_fit_decreasing(lengths, 128)
    assert sorted(i for b in bins for i in b) == list(range(300))
    assert all(sum(lengths[i] for i in b) <= 128 for b in bins)
    lower_bound = -(-sum(lengths) // 128)
    assert len(bins) <= lower_bound * 1.05 + 1  # nearly full rows
    with pytest.raises(ValueError, match="length 9 > capacity 8"):
        best_fit_decreasing([9], 8)


def test_collator_choice_follows_attention(caplog):
    tok = SimpleNamespace(pad_token_id=PAD)
    model = lambda attn: SimpleNamespace(config=SimpleNamespace(_attn_implementation=attn))  # noqa: E731
    assert isinstance(make_sft_collator(model("sdpa"), tok, packing=False), SFTCollator)
    with caplog.at_level("INFO", logger="mini_lm"):
        assert isinstance(make_sft_collator(model("sdpa"), tok, packing=True), PackedCollator)
        assert isinstance(make_sft_collator(model("flash_attention_2"), tok, packing=True), FlattenedCollator)
        assert isinstance(make_sft_collator(model("flex_attention"), tok, packing=True), PackedCollator)
    assert "block-diagonal causal mask" in caplog.text and "varlen" in caplog.text
    assert "document BlockMask" in caplog.text
    with pytest.raises(ValueError, match="packing: true is not supported with attn_implementation=flex"):
        make_sft_collator(model("flex"), tok, packing=True)
