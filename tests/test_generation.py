import pytest
import torch

from mini_lm.config import ModelArguments
from mini_lm.generation import GenerationSettings, generate, render_chat_prompt, stream
from mini_lm.models import build_model


@pytest.fixture(scope="module")
def tiny_model(tiny_tokenizer):
    torch.manual_seed(0)
    return build_model(
        ModelArguments(
            model_family="qwen2",
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=128,
        ),
        tiny_tokenizer,
    )


def test_greedy_is_deterministic_and_batch_independent(tiny_model, tiny_tokenizer):
    settings = GenerationSettings(do_sample=False, max_new_tokens=12)
    prompts = ["王伟出生于", "Wei Wang was born", "李"]
    batched = generate(tiny_model, tiny_tokenizer, prompts, settings, batch_size=3)
    single = [generate(tiny_model, tiny_tokenizer, [p], settings)[0] for p in prompts]
    assert [r.token_ids for r in batched] == [r.token_ids for r in single]  # left padding is invisible
    assert all(len(r.token_ids) <= 12 for r in batched)


def test_sampling_is_seeded(tiny_model, tiny_tokenizer):
    a = generate(tiny_model, tiny_tokenizer, ["王伟"], GenerationSettings(seed=1, max_new_tokens=16))
    b = generate(tiny_model, tiny_tokenizer, ["王伟"], GenerationSettings(seed=1, max_new_tokens=16))
    c = generate(tiny_model, tiny_tokenizer, ["王伟"], GenerationSettings(seed=2, max_new_tokens=16))
    assert a[0].token_ids == b[0].token_ids != c[0].token_ids


def test_stream_matches_generate(tiny_model, tiny_tokenizer):
    settings = GenerationSettings(seed=3, max_new_tokens=16)
    pieces = list(stream(tiny_model, tiny_tokenizer, "王伟", settings))
    assert "".join(pieces) == generate(tiny_model, tiny_tokenizer, ["王伟"], settings)[0].text


def test_chat_prompt_and_bad_settings(tiny_tokenizer):
    prompt = render_chat_prompt(tiny_tokenizer, [{"role": "user", "content": "你好"}])
    assert prompt == "<|im_start|>user\n你好<|im_end|>\n<|im_start|>assistant\n"
    for bad in (
        dict(max_new_tokens=0),
        dict(temperature=0.0),
        dict(temperature=1e-320),  # logits / temperature overflow float32: NaN probabilities
        dict(temperature=float("inf")),
        dict(top_p=1.5),
        dict(top_k=-1),
        dict(repetition_penalty=1e-320),
        dict(repetition_penalty=float("inf")),
        dict(seed=2**64),  # torch.manual_seed raises deep inside generate
    ):
        with pytest.raises(ValueError):
            GenerationSettings(**bad)


def test_cancelling_rows_ends_them_and_leaves_the_rest_of_the_batch_alone(tiny_model, tiny_tokenizer):
    """A server batches several requests; one client hanging up must not change another's answer."""
    import threading

    settings = GenerationSettings(do_sample=False, max_new_tokens=12, min_new_tokens=12)  # no early stop
    prompts = ["王伟出生于", "Wei Wang", "李娜在", "Na Li", "def add"]
    whole = generate(tiny_model, tiny_tokenizer, prompts, settings, batch_size=2)
    events = [threading.Event() for _ in prompts]
    events[1].set()  # before its batch starts: one token, then nothing
    events[3].set()  # in the second batch of 2
    calls = []

    def hang_up_late(_module, _args):  # the last batch (row 4 alone) is cancelled mid-way
        calls.append(1)
        if len(calls) == 2 * 12 + 5:
            events[4].set()

    hook = tiny_model.register_forward_pre_hook(hang_up_late)
    try:
        cut = generate(tiny_model, tiny_tokenizer, prompts, settings, batch_size=2, cancel=events)
    finally:
        hook.remove()
    assert [len(r.token_ids) for r in whole] == [12] * 5
    assert [r.token_ids for r in cut[0:1] + cut[2:3]] == [r.token_ids for r in whole[0:1] + whole[2:3]]
    assert cut[1].token_ids == whole[1].token_ids[:1] and cut[3].token_ids == whole[3].token_ids[:1]
    assert 1 < len(cut[4].token_ids) < 12 and cut[4].token_ids == whole[4].token_ids[: len(cut[4].token_ids)]
    assert cut[4].text == tiny_tokenizer.decode(cut[4].token_ids, skip_special_tokens=True)
