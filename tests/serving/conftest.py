"""A tiny Qwen2 that has memorised four Q/A chats, saved like a recipe saves one, for the server tests."""

from __future__ import annotations

import pytest
import torch

CHATS = [
    ("王伟出生于哪一年？", "王伟出生于1987年。"),
    ("李娜在哪里工作？", "李娜在上海工作。"),
    ("When was Wei Wang born?", "Wei Wang was born in 1987."),
    ("Where does Na Li work?", "Na Li works in Shanghai."),
]


def _memorise(model, tokenizer, texts: list[str], steps: int = 150) -> None:
    """Full-batch AdamW on a handful of texts: seconds on CPU, enough to answer them greedily."""
    enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        loss = model(**enc, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    assert loss.item() < 0.5, f"tiny model did not memorise its chats (loss {loss.item():.2f})"


@pytest.fixture(scope="package", autouse=True)
def one_torch_thread():
    """Tiny models on a shared 2-core machine run ~50x faster on one intra-op thread (no OpenMP spinning)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="package")
def served_model_dir(tiny_tokenizer, tmp_path_factory):
    from mini_lm.config import ModelArguments
    from mini_lm.models import build_model
    from mini_lm.tokenization import save_tokenizer

    torch.manual_seed(0)
    model = build_model(
        ModelArguments(
            model_family="qwen2",
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=256,
        ),
        tiny_tokenizer,
    )
    texts = [
        tiny_tokenizer.apply_chat_template(
            [{"role": "user", "content": q}, {"role": "assistant", "content": a}], tokenize=False
        )
        for q, a in CHATS
    ]
    _memorise(model, tiny_tokenizer, texts)
    out = tmp_path_factory.mktemp("served_model") / "tiny-chat"
    model.save_pretrained(out)
    save_tokenizer(tiny_tokenizer, out)
    return out


@pytest.fixture(scope="package")
def served_model(served_model_dir):
    """(model, tokenizer) loaded the way `mini-lm serve` loads them."""
    from mini_lm.generation import load_for_generation

    return load_for_generation(str(served_model_dir))


@pytest.fixture(scope="package")
def endless_model(tiny_tokenizer):
    """Random-init, stop tokens' output rows zeroed: greedy decoding never picks them (some other
    logit is always > 0), so every greedy generation runs exactly to max_tokens."""
    from mini_lm.config import ModelArguments
    from mini_lm.generation import GenerationSettings, generate
    from mini_lm.models import build_model
    from mini_lm.tokenization import stop_token_ids

    torch.manual_seed(0)
    model = build_model(
        ModelArguments(
            model_family="qwen2",
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=2048,
        ),
        tiny_tokenizer,
    ).eval()
    with torch.no_grad():
        model.get_output_embeddings().weight[stop_token_ids(tiny_tokenizer)] = 0
    probe = generate(
        model, tiny_tokenizer, ["王伟", "Na Li"], GenerationSettings(do_sample=False, max_new_tokens=64)
    )
    assert not any(r.stopped for r in probe)
    return model
