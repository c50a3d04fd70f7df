"""Likelihood scoring of choices: known logits, normalisation, only continuation tokens, batching, families."""

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from transformers.modeling_outputs import CausalLMOutput

from mini_lm import scoring
from mini_lm.config import ModelArguments
from mini_lm.models import build_model
from mini_lm.scoring import ChoiceScore, best_choice, encode_pair, score_choices


class BigramLM(torch.nn.Module):
    """Logits at each position = ``table[current token]`` (+ ``bump`` on one token at given positions):
    every log-probability the scorer should return can be computed by hand."""

    def __init__(self, vocab: int, max_positions: int = 64):
        super().__init__()
        self.table = torch.zeros(vocab, vocab)
        self.bumps: dict[int, tuple[int, float]] = {}  # position -> (token, added logit)
        self.config = SimpleNamespace(max_position_embeddings=max_positions)
        self.device = torch.device("cpu")

    def forward(self, input_ids, attention_mask=None, position_ids=None):
        logits = self.table[input_ids].clone()  # (B, T, V)
        for position, (token, value) in self.bumps.items():
            logits[..., token] += (position_ids == position).float() * value
        return CausalLMOutput(logits=logits)

    def logprob(self, ids: list[int], start: int) -> float:
        """Hand-computed sum of log p(ids[k] | ids[k-1]) for k >= start (no bumps)."""
        return sum(F.log_softmax(self.table[ids[k - 1]], -1)[ids[k]].item() for k in range(start, len(ids)))


def ids(tok, text):
    return tok.encode(text, add_special_tokens=False)


@pytest.fixture
def bigram(tiny_tokenizer):
    return BigramLM(len(tiny_tokenizer))


def test_known_logits_right_choice_wins(bigram, tiny_tokenizer):
    tok = tiny_tokenizer
    (yu,), (bei, jing) = ids(tok, "于"), ids(tok, "北京")
    bigram.table[yu, bei] = 4.0  # after 于 the model expects 北, then 京
    bigram.table[bei, jing] = 4.0
    prompt = "王伟出生于"
    [scores] = score_choices(bigram, tok, [prompt], [["上海", "北京"]])
    full = ids(tok, prompt)
    for choice, score in zip(("上海", "北京"), scores):
        assert score.logprob == pytest.approx(bigram.logprob(full + ids(tok, choice), len(full)), abs=1e-5)
        assert (score.n_tokens, score.n_chars, score.n_bytes) == (2, 2, 6)
    assert best_choice(scores) == 1 and scores[1].greedy and not scores[0].greedy
    assert scores[0].logprob < scores[1].logprob < 0


def test_length_normalisation_changes_the_winner(bigram, tiny_tokenizer):
    tok = tiny_tokenizer
    (yu,), (bei, jing, da, xue), (shu,) = ids(tok, "于"), ids(tok, "北京大学"), ids(tok, "数")
    bigram.table[yu, shu] = 3.0  # "数": one fairly likely token
    bigram.table[yu, bei] = 2.0  # "北京大学": a less likely start, then each next token near-certain
    for a, b in ((bei, jing), (jing, da), (da, xue)):
        bigram.table[a, b] = 9.0
    [scores] = score_choices(bigram, tok, ["王伟毕业于"], [["数", "北京大学"]])
    short, long = scores
    assert short.logprob > long.logprob  # the sum (lm-eval acc) prefers the short choice ...
    assert long.per_token > short.per_token and long.per_char > short.per_char  # ... normalised, the long one
    assert [best_choice(scores, n) for n in ("sum", "token", "char", "byte")] == [0, 1, 1, 1]
    with pytest.raises(ValueError, match="unknown normalisation"):
        best_choice(scores, "mean")


def test_only_continuation_tokens_are_scored(bigram, tiny_tokenizer):
    tok = tiny_tokenizer
    prompt, choice = "王伟出生于", "北京"
    n_prompt = len(ids(tok, prompt))
    target = ids(tok, choice)[0]

    def score(bumps):
        bigram.bumps = bumps
        return score_choices(bigram, tok, ["李", prompt], [["数学"], [choice]])[1][0].logprob

    base = score({})
    # logits at the prompt's positions (predicting prompt tokens) do not count, even for the choice's token
    assert score({k: (target, 5.0) for k in range(n_prompt - 1)}) == pytest.approx(base, abs=1e-6)
    # the last prompt position predicts the first continuation token: it counts
    assert score({n_prompt - 1: (target, 5.0)}) > base + 1.0
    # past the continuation's end: nothing to score
    assert score({n_prompt + 1: (target, 5.0)}) == pytest.approx(base, abs=1e-6)


def test_leading_space_moves_into_the_continuation(tiny_tokenizer):
    tok = tiny_tokenizer
    spaced = encode_pair(tok, "Na Li works in ", "Shanghai")
    assert spaced == encode_pair(tok, "Na Li works in", " Shanghai")
    assert spaced[0] == ids(tok, "Na Li works in") and tok.decode(spaced[1]) == " Shanghai"
    assert len(spaced[1]) < len(ids(tok, "Shanghai"))  # " Shanghai" is the word the model read
    assert encode_pair(tok, "", "北京") == ([tok.eos_token_id], ids(tok, "北京"))  # empty prompt: eos first
    with pytest.raises(ValueError, match="empty continuation"):
        encode_pair(tok, "王伟", "")


def tiny(family, tokenizer, positions=128):
    torch.manual_seed(0)
    args = ModelArguments(
        model_family=family,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=positions,
    )
    return build_model(args, tokenizer).eval()


PROMPTS = [
    "王伟出生于",
    "Wei Wang was born on ",
    "<|im_start|>user\n李娜的专业是什么？<|im_end|>\n<|im_start|>assistant\n",
]
CHOICES = [["1987年3月5日", "北京"], ["March 5, 1987", "Shanghai", "May"], ["李娜的专业是数学。", "上海"]]


def reference(model, tok, prompt, choice) -> float:
    """One unpadded forward, no positions passed: the plain HF way of scoring one row."""
    ctx, cont = encode_pair(tok, prompt, choice)
    logprobs = F.log_softmax(model(torch.tensor([ctx + cont])).logits[0, :-1].float(), -1)
    return sum(logprobs[len(ctx) - 1 + k, t].item() for k, t in enumerate(cont))


@pytest.mark.parametrize("family", ["qwen2", "gpt2"])
def test_batched_equals_one_at_a_time(family, tiny_tokenizer, monkeypatch):
    model, tok = tiny(family, tiny_tokenizer), tiny_tokenizer
    batched = score_choices(model, tok, PROMPTS, CHOICES, batch_size=7)  # rows of many lengths, padded
    for prompt, options, row in zip(PROMPTS, CHOICES, batched):
        for choice, score in zip(options, row):
            alone = score_choices(model, tok, [prompt], [[choice]], batch_size=1)[0][0]
            assert score.logprob == pytest.approx(alone.logprob, abs=1e-4)
            assert score.logprob == pytest.approx(reference(model, tok, prompt, choice), abs=1e-4)
            assert score.n_tokens == len(encode_pair(tok, prompt, choice)[1]) and not score.truncated
    # negative controls: padding the model can see, and (GPT-2's learned positions; RoPE is
    # shift-invariant) positions that ignore the padding, both change the padded rows' scores
    controls = {"_left_pad": visible_padding}
    if family == "gpt2":
        controls["_position_ids"] = lambda mask: torch.arange(mask.shape[1]).expand_as(mask)
    for name, wrong in controls.items():
        with monkeypatch.context() as patch:
            patch.setattr(scoring, name, wrong)
            shifted = score_choices(model, tok, PROMPTS, CHOICES, batch_size=7)
        diffs = [abs(a.logprob - b.logprob) for ra, rb in zip(batched, shifted) for a, b in zip(ra, rb)]
        assert max(diffs) > 1e-3, name


def test_one_token_choices_after_one_prompt_share_a_forward_row(tiny_tokenizer):
    """CMMLU's " A" / " B" / " C" / " D" after a question read the same tokens: one forward row per
    question (as lm-eval caches them), each choice still scored as if alone. Negative control:
    multi-token choices read different tokens, one row each."""
    model, tok = tiny("qwen2", tiny_tokenizer), tiny_tokenizer
    prompts = ["王伟出生于哪里？答案：", "Where was Wei Wang born? Answer:", "李娜的专业是什么？答案："]
    letters = [["A", "B", "C", "D"]] * 3
    assert all(len(encode_pair(tok, p, c)[1]) == 1 for p in prompts for c in letters[0])
    expected = [[reference(model, tok, p, c) for c in "ABCD"] for p in prompts]
    rows = []
    model.register_forward_pre_hook(lambda _, args, kw: rows.append(len(kw["input_ids"])), with_kwargs=True)
    shared = score_choices(model, tok, prompts, letters, batch_size=2)
    assert sum(rows) == 3
    assert [[s.logprob for s in row] for row in shared] == [pytest.approx(e, abs=1e-4) for e in expected]
    rows.clear()
    score_choices(model, tok, prompts, [["北京", "上海大学"]] * 3)
    assert sum(rows) == 6


def visible_padding(rows, pad, left_pad=scoring._left_pad):
    ids, mask = left_pad(rows, pad)
    return ids, torch.ones_like(mask)


def test_long_prompt_is_cut_on_the_left(tiny_tokenizer):
    model, tok = tiny("gpt2", tiny_tokenizer, positions=16), tiny_tokenizer
    prompt = "王伟出生于1987年3月5日。他毕业于北京大学。李娜在上海工作。她的专业是"
    [[score]] = score_choices(model, tok, [prompt], [["数学"]])
    ctx, cont = encode_pair(tok, prompt, "数学")
    kept = (ctx + cont)[-17:]  # 16 positions: 16 inputs predict the last 16 tokens
    logprobs = F.log_softmax(model(torch.tensor([kept[:-1]])).logits[0].float(), -1)
    assert score.truncated and score.logprob == pytest.approx(
        sum(logprobs[-2 + k, t].item() for k, t in enumerate(cont)), abs=1e-4
    )
    with pytest.raises(ValueError, match="does not fit"):
        score_choices(model, tok, ["王"], [["王伟出生于1987年3月5日。他毕业于北京大学。"]])


def test_bert_adapter_scores_token_by_token(tiny_bert_tokenizer):
    tok = tiny_bert_tokenizer
    torch.manual_seed(0)
    args = ModelArguments(
        model_family="bert",
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=16,
        vocab_pad_multiple=1,
    )
    model = build_model(args, tok)
    model.bind_tokenizer(tok, context_window=8)
    model.eval()
    prompts, choices = ["宝玉笑道", "黛玉听了，便说"], [["你们来了", "好"], ["凤姐儿也笑了", "好！"]]
    batched = score_choices(model, tok, prompts, choices, batch_size=5)
    for prompt, options, row in zip(prompts, choices, batched):
        for choice, score in zip(options, row):
            ctx, cont = encode_pair(tok, prompt, choice)
            by_hand = 0.0
            for k, target in enumerate(cont):  # one forward per token: the adapter's own interface
                context = torch.tensor([(ctx + cont[:k])[-8:]])
                by_hand += F.log_softmax(model(input_ids=context).logits[0, -1], -1)[target].item()
            assert score.logprob == pytest.approx(by_hand, abs=1e-4)
            assert score.logprob == pytest.approx(
                score_choices(model, tok, [prompt], [[choice]], batch_size=1)[0][0].logprob, abs=1e-4
            )
            assert score.truncated == (len(ctx) + len(cont) - 1 > 8)
    assert any(s.truncated for row in batched for s in row)  # "凤姐儿也笑了" runs past the window


def test_bad_input_is_a_clear_error(bigram, tiny_tokenizer):
    with pytest.raises(ValueError, match="2 prompts but 1 lists"):
        score_choices(bigram, tiny_tokenizer, ["a", "b"], [["c"]])
    with pytest.raises(ValueError, match="has no choices"):
        score_choices(bigram, tiny_tokenizer, ["王伟"], [[]])
    with pytest.raises(ValueError, match="batch_size"):
        score_choices(bigram, tiny_tokenizer, ["王伟"], [["北京"]], batch_size=0)


def test_choice_score_normalisations():
    score = ChoiceScore(logprob=-6.0, n_tokens=2, n_chars=3, n_bytes=9, greedy=False)
    assert (score.per_token, score.per_char, score.per_byte) == (-3.0, -2.0, pytest.approx(-2 / 3))
    assert [score.value(n) for n in ("sum", "token", "char")] == [-6.0, -3.0, -2.0]
