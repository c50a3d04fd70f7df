"""Helpers for benchmark tests: a tiny Qwen2 with the real Qwen2.5 tokenizer, saved as a model dir
that mini_lm and lm-evaluation-harness both load."""

from __future__ import annotations

from pathlib import Path

import torch


def save_tiny_qwen(shared_data: Path, out: Path, seed: int = 0) -> Path:
    """A 2-layer, 32-wide Qwen2 over Qwen2.5's vocabulary, weights drawn wide (std 0.5) so that
    its preferences differ from question to question (a std-0.02 init answers "D" everywhere,
    which would make agreement on predictions say little)."""
    from transformers import AutoTokenizer

    from mini_lm.config import ModelArguments
    from mini_lm.models import build_model

    tokenizer = AutoTokenizer.from_pretrained(shared_data / "tokenizers" / "qwen2.5")
    torch.manual_seed(seed)
    args = ModelArguments(
        model_family="qwen2",
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=1024,
    )
    model = build_model(args, tokenizer)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() > 1:
                parameter.normal_(std=0.5)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
