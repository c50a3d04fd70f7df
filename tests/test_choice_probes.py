"""Multiple-choice probe questions: loaded from YAML / JSONL, scored by likelihood on a model with
known logits (the right choice wins; length normalisation decides a constructed case), summarized
with chance and significance by the registry; the built-in questions follow the run's language."""

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from transformers.modeling_outputs import CausalLMOutput

from mini_lm.config import ProbeArguments
from mini_lm.metrics import chance_p_value
from mini_lm.probe_metrics import format_summary, summarize
from mini_lm.probing import (
    ProbeConfigError,
    data_language,
    expected_keys,
    for_language,
    load_questions,
    probe_model,
)
from mini_lm.scoring import encode_pair


class BigramLM(torch.nn.Module):
    """Next-token logits = ``table[current token]``: every log-likelihood can be computed by hand."""

    def __init__(self, vocab: int):
        super().__init__()
        self.table = torch.zeros(vocab, vocab)
        self.config = SimpleNamespace(max_position_embeddings=256)
        self.device = torch.device("cpu")

    def forward(self, input_ids, attention_mask=None, position_ids=None):
        return CausalLMOutput(logits=self.table[input_ids].clone())

    def logprob(self, ids: list[int], start: int) -> float:
        return sum(F.log_softmax(self.table[ids[k - 1]], -1)[ids[k]].item() for k in range(start, len(ids)))

    def steer(self, tokenizer, prompt: str, logits: dict[str, float]) -> None:
        """Each choice's first token of its own (after what the choices share) gets the given logit
        after the token before it; every other step of each choice is near certain (logit 30)."""
        pairs = {c: encode_pair(tokenizer, prompt, c) for c in logits}
        for choice, (ctx, cont) in pairs.items():
            others = [o for c, (_, o) in pairs.items() if c != choice]
            own = next(k for k in range(len(cont)) if all(o[k : k + 1] != cont[k : k + 1] for o in others))
            ids = ctx[-1:] + cont
            for k in range(len(cont)):
                self.table[ids[k], ids[k + 1]] = logits[choice] if k == own else 30.0


QUESTIONS = """
questions:
  - {id: city, prompt: 王伟毕业于, choices: [上海, 北京大学, 数学], answer: 北京大学, group: sft}
  - {id: work, question: 李娜在哪里工作？, choices: [北京, 上海], answer: B, group: heldout}
  - {id: free, prompt: 中国的历史}
multiple_choice:
  - {id: city2, prompt: 李娜出生在, choices: [上海, 北京], answer: 0, group: heldout}
"""


@pytest.fixture
def questions(tmp_path):
    path = tmp_path / "q.yaml"
    path.write_text(QUESTIONS, encoding="utf-8")
    return load_questions(path)


def test_choice_questions_load_with_their_answer_as_text_letter_or_index(questions):
    by_id = {q.id: q for q in questions}
    assert [q.kind for q in questions] == ["choice", "choice", "generation", "choice"]
    assert (by_id["city"].answer, by_id["work"].answer, by_id["city2"].answer) == (1, 1, 0)
    assert by_id["work"].mode == "chat" and by_id["work"].expected == "上海"  # the right choice's text
    keys = expected_keys(questions, ["greedy", "sampled"], step=10)  # generated twice, scored once
    assert sorted(k[3] for k in keys) == ["greedy", "likelihood", "likelihood", "likelihood", "sampled"]


@pytest.mark.parametrize(
    "content, message",
    [
        (
            "questions:\n  - {prompt: a, answer: b}\n",
            r"question 1: 'answer' belongs to a multiple-choice question",
        ),
        (
            "questions:\n  - {prompt: a, choices: [b, c]}\n",
            r"question 1: a multiple-choice question needs 'answer'",
        ),
        (
            "questions:\n  - {prompt: a, choices: [b, c], answer: d}\n",
            r"question 1: 'answer' 'd' is none of the choices",
        ),
        (
            "questions:\n  - {prompt: a, choices: [b], answer: b}\n",
            r"question 1: 'choices' must be a list of 2",
        ),
        ("multiple_choice:\n  - {prompt: a}\n", r"multiple_choice question 1: needs 'choices' and 'answer'"),
    ],
)
def test_bad_choice_questions_are_named(tmp_path, content, message):
    path = tmp_path / "q.yaml"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ProbeConfigError, match=message):
        load_questions(path)


def test_likelihood_picks_the_right_choice_and_length_normalisation_matters(questions, tiny_tokenizer):
    tok, model = tiny_tokenizer, BigramLM(len(tiny_tokenizer))
    city, work, _, city2 = questions
    # "北京大学" (4 characters) is a bit less likely than "上海" (2) in sum, more likely per character:
    # lm-eval's acc (sum) picks the wrong one, its acc_norm (per character) the right one.
    model.steer(tok, city.render(tok), {"上海": 5.0, "北京大学": 4.8, "数学": 0.0})
    model.steer(tok, work.render(tok), {"北京": 0.0, "上海": 6.0})  # chat: the right one, clearly
    model.steer(tok, city2.render(tok), {"上海": 0.0, "北京": 6.0})  # wrong under both (its own last token)
    records = probe_model(model, tok, [city, work, city2], decodings={})
    r = {rec["question_id"]: rec for rec in records}
    for q in (city, work, city2):
        prompt = q.render(tok)
        hand = [
            model.logprob(sum(encode_pair(tok, prompt, c), []), len(encode_pair(tok, prompt, c)[0]))
            for c in q.choices
        ]
        assert r[q.id]["choice_logprobs"] == pytest.approx(hand, abs=1e-4)
    assert r["city"]["choice_logprobs"][0] > r["city"]["choice_logprobs"][1]  # sum favours 上海 ...
    assert (r["city"]["answer"], r["city"]["mc_accuracy"], r["city"]["mc_accuracy_sum"]) == (
        "北京大学",
        True,
        False,
    )
    assert (r["work"]["answer"], r["work"]["mc_accuracy"], r["work"]["mc_accuracy_sum"]) == (
        "上海",
        True,
        True,
    )
    assert (r["city2"]["mc_accuracy"], r["city2"]["mc_chance"]) == (False, 0.5)
    assert r["city"]["decoding"] == "likelihood" and "distinct_2" not in r["city"]  # not a generated answer

    summary = summarize(records)
    assert summary["probe/likelihood/mc_accuracy"] == pytest.approx(2 / 3)
    assert summary["probe/likelihood/mc_accuracy_sum"] == pytest.approx(1 / 3)
    assert summary["probe/likelihood/mc_chance"] == pytest.approx((1 / 3 + 1 / 2 + 1 / 2) / 3)
    assert summary["probe/likelihood/mc_p_value"] == pytest.approx(chance_p_value(2, [1 / 3, 1 / 2, 1 / 2]))
    assert summary["probe/likelihood/mc_accuracy/raw/sft"] == 1.0
    assert summary["probe/likelihood/mc_p_value/chat"] == pytest.approx(0.5)
    line = format_summary(10, summary, n_questions=3)
    assert "likelihood: MC acc raw 50% (sft 100%, heldout 0%); chat 100% (heldout 100%)" in line
    assert "chance raw 42% (sft 33%, heldout 50%); chat 50% (heldout 50%)" in line
    assert "distinct-2" not in line.split("likelihood:")[1]  # generation metrics stay on generation lines


def test_enough_right_answers_beat_chance(tiny_tokenizer, tmp_path):
    tok, model = tiny_tokenizer, BigramLM(len(tiny_tokenizer))
    lines = [
        f"  - {{id: q{i}, prompt: '{i}号出生于', choices: [上海, 北京, 厦门, 成都], answer: 北京}}"
        for i in range(4)
    ]
    path = tmp_path / "q.yaml"
    path.write_text("questions:\n" + "\n".join(lines) + "\n", encoding="utf-8")
    questions = load_questions(path)
    for q in questions:
        model.steer(tok, q.render(tok), {"上海": 0.0, "北京": 8.0, "厦门": 0.0, "成都": 0.0})
    summary = summarize(probe_model(model, tok, questions, decodings={}))
    assert summary["probe/likelihood/mc_accuracy"] == 1.0
    assert summary["probe/likelihood/mc_p_value"] == pytest.approx(0.25**4)  # < 0.05: beats chance
    line = format_summary(1, summary, n_questions=0, n_choice=4)
    assert (
        line.startswith("probe checkpoint-1: 4 multiple choice\n")
        and "MC acc 100%  chance 25%  p vs chance 0.004 ✓" in line
    )


def test_the_built_in_questions_follow_the_language_of_the_training_data(shared_data, tiny_tokenizer):
    from datasets import Dataset

    from mini_lm.callbacks.probe import default_fit

    def tokenized(path, chars=20000):
        text = path.read_text(encoding="utf-8")[:chars]
        rows = [text[i : i + 500] for i in range(0, len(text), 500)]
        return Dataset.from_dict({"input_ids": [tiny_tokenizer.encode(t) for t in rows]})

    english = tokenized(shared_data / "corpus/en/tinyshakespeare.txt")
    chinese = tokenized(shared_data / "corpus/zh/hongloumeng.txt")
    assert (data_language(english, tiny_tokenizer), data_language(chinese, tiny_tokenizer)) == ("en", "zh")
    builtin = load_questions(None)
    asked = default_fit(builtin, ProbeArguments(), tiny_tokenizer, english)
    assert asked == for_language(builtin, "en") and {q.lang for q in asked} == {"en"}
    assert not any(q.expected for q in asked)  # nothing to score: knowledge reads n/a, not 0%
    assert {q.lang for q in default_fit(builtin, ProbeArguments(), tiny_tokenizer, chinese)} == {"zh"}
    assert default_fit(builtin, ProbeArguments(probe_language="all"), tiny_tokenizer, english) == builtin


def test_a_choice_question_that_does_not_fit_the_positions_fails_before_training(questions, tiny_tokenizer):
    from mini_lm.probing import check_questions_fit

    choice = [q for q in questions if q.kind == "choice"]
    check_questions_fit(choice, tiny_tokenizer, max_new_tokens=500, max_positions=64)  # nothing generated
    choice[0].choices = [choice[0].choices[0], "北京大学" * 30]
    with pytest.raises(
        ProbeConfigError, match=r"with its longest choice it exceeds the model's 64 positions"
    ):
        check_questions_fit(choice, tiny_tokenizer, max_new_tokens=500, max_positions=64)
