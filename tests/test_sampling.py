"""Each decoding strategy of the shared generation path keeps its promise, on a model whose
next-token distribution is known exactly: the BERT adapter with a zero MLM decoder, so its logits
are the decoder bias whatever the context."""

import math
from collections import Counter

import pytest
import torch

from mini_lm.config import ModelArguments
from mini_lm.generation import GenerationSettings, generate
from mini_lm.models import build_model

# probabilities of the five allowed tokens (everything else ~0), best first
PROBS = [0.40, 0.25, 0.15, 0.12, 0.08]
SAMPLES_PER_CALL = 48 * 16  # 48 prompts x 16 new tokens


@pytest.fixture(scope="module")
def known(tiny_bert_tokenizer):
    """(model, tokenizer, best-first token ids) with logits log(PROBS) on those ids, -30 elsewhere."""
    tok = tiny_bert_tokenizer
    torch.manual_seed(0)
    model = build_model(
        ModelArguments(
            model_family="bert",
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=64,
            vocab_pad_multiple=1,
        ),
        tok,
    )
    chars = [tok.convert_tokens_to_ids(c) for c in "宝玉笑道黛"]
    bias = torch.full((model.config.vocab_size,), -30.0)
    bias[chars] = torch.log(torch.tensor(PROBS))
    with torch.no_grad():
        model.cls.predictions.decoder.weight.zero_()  # logits = bias, whatever the context
        model.cls.predictions.bias.copy_(bias)
    return model.eval(), tok, chars


def sample(known, prompt="你们来了", **settings) -> Counter:
    model, tok, _ = known
    settings = GenerationSettings(**{"max_new_tokens": 16, "temperature": 1.0, "top_k": 0, **settings})
    results = generate(model, tok, [prompt] * 48, settings, batch_size=48)
    return Counter(t for r in results for t in r.token_ids)


def test_the_logits_are_known(known):
    model, tok, chars = known
    logits = model(input_ids=torch.tensor([[5, 6, 7]])).logits[0, -1]
    assert torch.allclose(logits.softmax(-1)[chars], torch.tensor(PROBS), atol=1e-6)


def test_plain_sampling_follows_the_distribution(known):
    counts = sample(known)
    chars = known[2]
    assert set(counts) == set(chars)  # negative control for the constraints below: all five appear
    for token, p in zip(chars, PROBS):
        assert counts[token] / SAMPLES_PER_CALL == pytest.approx(p, abs=0.05)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_top_k_never_samples_outside_the_k_best(known, k):
    counts = sample(known, top_k=k)
    assert set(counts) == set(known[2][:k])


@pytest.mark.parametrize("top_p, nucleus", [(0.5, 2), (0.8, 3), (0.9, 4)])
def test_top_p_never_samples_outside_the_nucleus(known, top_p, nucleus):
    # nucleus = the fewest best tokens whose probabilities add up to >= top_p: 0.40+0.25 >= 0.5, ...
    assert sum(PROBS[: nucleus - 1]) < top_p <= sum(PROBS[:nucleus]) + 1e-9
    counts = sample(known, top_p=top_p)
    assert set(counts) == set(known[2][:nucleus])


def test_temperature_sharpens_and_flattens(known):
    best = known[2][0]
    cold, warm, hot = (sample(known, temperature=t)[best] / SAMPLES_PER_CALL for t in (0.3, 1.0, 3.0))
    # p(best) at temperature t is softmax(log p / t): 0.3 -> 0.80, 3.0 -> 0.25
    softened = [p ** (1 / 3.0) for p in PROBS]
    assert cold == pytest.approx(0.40 ** (1 / 0.3) / sum(p ** (1 / 0.3) for p in PROBS), abs=0.05)
    assert hot == pytest.approx(softened[0] / sum(softened), abs=0.05)
    assert cold > warm > hot


def test_greedy_and_repetition_penalty(known):
    model, tok, chars = known
    greedy = GenerationSettings(do_sample=False, max_new_tokens=6)
    first = generate(model, tok, ["你们来了"] * 3, greedy)
    assert all(r.token_ids == [chars[0]] * 6 for r in first)  # argmax every step, deterministic
    # HF's penalty multiplies a seen token's (negative) logit by 2: log 0.40 = -0.92 -> -1.83, now below
    # log 0.25 = -1.39, so the 2nd token is the runner-up; then -1.83 beats log 0.15 = -1.90 and the
    # best token returns for good (the penalty does not grow with the count).
    penalized = generate(
        model,
        tok,
        ["你们来了"],
        GenerationSettings(do_sample=False, max_new_tokens=6, repetition_penalty=2.0),
    )[0]
    assert penalized.token_ids == [chars[0], chars[1]] + [chars[0]] * 4
    assert 2 * math.log(0.40) > math.log(0.15)


def test_stop_tokens_and_lengths(known):
    model, tok, chars = known
    stop_at_second = GenerationSettings(
        do_sample=False, max_new_tokens=8, repetition_penalty=2.0, stop_token_ids=[chars[1]]
    )
    result = generate(model, tok, ["你们"], stop_at_second)[0]
    assert result.token_ids == chars[:2] and result.stopped  # the stop token is kept and ends the row
    assert result.text == "宝玉"
    free = generate(model, tok, ["你们"], GenerationSettings(do_sample=False, max_new_tokens=8))[0]
    assert len(free.token_ids) == 8 and not free.stopped
    # min_new_tokens hides the stop token until then (HF's MinNewTokensLengthLogitsProcessor)
    at_least = GenerationSettings(
        do_sample=False, max_new_tokens=8, min_new_tokens=4, stop_token_ids=[chars[0]]
    )
    forced = generate(model, tok, ["你们"], at_least)[0]
    assert forced.token_ids == [chars[1]] * 4 + [chars[0]] and forced.stopped
