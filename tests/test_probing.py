"""Probe questions files, decoding settings, probing a model, aggregates and the probes store."""

import json

import pytest
import torch

from mini_lm.config import ModelArguments, ProbeArguments
from mini_lm.data.synthetic import write_world
from mini_lm.models import build_model
from mini_lm.probe_metrics import format_summary, summarize
from mini_lm.probing import (
    ProbeConfigError,
    ProbeStore,
    check_questions_fit,
    decoding_settings,
    load_questions,
    losses_at,
    probe_checkpoint,
)


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


def test_yaml_questions_raw_and_chat(tmp_path):
    path = tmp_path / "q.yaml"
    path.write_text(
        "questions:\n"
        "  - prompt: 中国的历史\n"
        "  - question: 李白是谁？\n    expected: 诗人\n    group: famous\n"
        "  - id: sys\n    messages:\n      - {role: system, content: 简短回答}\n"
        "      - {role: user, content: 你好}\n"
        "  - prompt: 王伟出生于\n    keywords: [北京]\n",
        encoding="utf-8",
    )
    raw, chat, system, keyword = load_questions(path)
    assert (raw.mode, raw.text, raw.id, raw.expected) == ("raw", "中国的历史", "中国的历史", None)
    assert (chat.mode, chat.messages, chat.expected, chat.group) == (
        "chat",
        [{"role": "user", "content": "李白是谁？"}],
        "诗人",
        "famous",
    )
    assert (
        system.id == "sys"
        and [m["role"] for m in system.messages] == ["system", "user"]
        and system.text == "你好"
    )
    assert keyword.keywords == ["北京"]


def test_default_questions_and_world_files(tmp_path):
    default = load_questions(None)
    assert {"中国的历史", "人工智能是", "李白是谁？", "who are you?"} <= {q.text for q in default}
    paths = write_world(tmp_path, seed=0, n_people=20)
    probe = load_questions(paths["probe_questions"])
    assert len(probe) == 2 * 2 * 2 * 3 * 2  # 2 people per split x 2 splits x zh/en x 3 facts x raw/chat
    assert {q.group for q in probe} == {"sft", "heldout"} and {q.mode for q in probe} == {"raw", "chat"}
    assert all(q.expected for q in probe)
    completions = load_questions(paths["completions"])  # JSONL: raw prompts, group from "split"
    assert (
        completions[0].mode == "raw"
        and completions[0].expected
        and completions[0].group in ("sft", "heldout")
    )
    qa = load_questions(paths["qa_heldout"])  # chat messages: the reference answer turn is dropped
    assert qa[0].mode == "chat" and [m["role"] for m in qa[0].messages] == ["user"]


@pytest.mark.parametrize(
    "content, message",
    [
        ("questions:\n  - {prompt: a, question: b}\n", r"q\.yaml: question 1: needs exactly one of"),
        (
            "questions:\n  - prompt: a\n  - {prompt: ''}\n",
            r"q\.yaml: question 2: 'prompt' must be a non-empty string",
        ),
        ("questions:\n  - {prompt: a, expectd: b}\n", r"question 1: unknown field\(s\) \['expectd'\]"),
        (
            "questions:\n  - {prompt: a}\n  - {prompt: a}\n",
            r"question 2: duplicate question id 'a' \(first at .*question 1\)",
        ),
        (
            "questions:\n  - messages: [{role: user, content: hi}, {role: system, content: x}]\n",
            "must end with a user turn",
        ),
        ("questions:\n  - {question: hi, keywords: x}\n", "'keywords' must be a list of strings"),
        ("questions: {prompt: a}\n", "expected a list of questions"),
        ("questions: []\n", "no questions"),
        ("questions: [\n", "not valid YAML"),
    ],
)
def test_bad_questions_files_name_file_question_and_field(tmp_path, content, message):
    path = tmp_path / "q.yaml"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ProbeConfigError, match=message):
        load_questions(path)


def test_bad_jsonl_line_and_missing_file(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text('{"prompt": "a"}\n{"prompt": \n', encoding="utf-8")
    with pytest.raises(ProbeConfigError, match=r"q\.jsonl:2: not valid JSON"):
        load_questions(path)
    with pytest.raises(ProbeConfigError, match="not found"):
        load_questions(tmp_path / "nowhere.yaml")


def test_decoding_settings_follow_seed_000_and_reject_unknown():
    settings = decoding_settings(ProbeArguments())
    assert list(settings) == ["greedy", "sampled"]
    assert not settings["greedy"].do_sample
    sampled = settings["sampled"]
    assert (sampled.temperature, sampled.top_k, sampled.max_new_tokens, sampled.repetition_penalty) == (
        0.8,
        50,
        60,
        1.0,
    )
    with pytest.raises(ProbeConfigError, match="unknown .*'beam'"):
        decoding_settings(ProbeArguments(probe_decoding=["beam"]))


def test_questions_must_fit_tokenizer_and_positions(tiny_tokenizer):
    from transformers import PreTrainedTokenizerFast

    questions = load_questions(None)
    check_questions_fit(questions, tiny_tokenizer, max_new_tokens=60, max_positions=1024)
    with pytest.raises(
        ProbeConfigError, match=r"exceeds the model's 64 positions: lower probe_max_new_tokens to \d+"
    ):
        check_questions_fit(questions, tiny_tokenizer, max_new_tokens=60, max_positions=64)
    no_template = PreTrainedTokenizerFast(
        tokenizer_object=tiny_tokenizer.backend_tokenizer, eos_token="<|endoftext|>"
    )
    with pytest.raises(ProbeConfigError, match="chat questions .* no chat template"):
        check_questions_fit(questions, no_template, max_new_tokens=8)


def test_builtin_chat_questions_are_skipped_without_a_chat_template(tiny_tokenizer, caplog):
    from transformers import PreTrainedTokenizerFast

    from mini_lm.callbacks.probe import default_fit

    no_template = PreTrainedTokenizerFast(
        tokenizer_object=tiny_tokenizer.backend_tokenizer, eos_token="<|endoftext|>"
    )
    builtin = load_questions(None)
    kept = default_fit(builtin, ProbeArguments(), no_template)
    n_chat = sum(q.mode == "chat" for q in builtin)
    assert n_chat and [q.mode for q in kept] == ["raw"] * (len(builtin) - n_chat)
    assert f"{n_chat} built-in chat questions skipped" in caplog.text
    assert default_fit(builtin, ProbeArguments(), tiny_tokenizer) == builtin
    named = ProbeArguments(probe_questions="mine.yaml")  # a named file is used as written (and checked)
    assert default_fit(builtin, named, no_template) == builtin


def test_probe_checkpoint_records_settings_metrics_and_is_reproducible(tiny_model, tiny_tokenizer):
    questions = [q for q in load_questions(None) if q.text in ("中国的历史", "李白是谁？")]
    decodings = decoding_settings(ProbeArguments(probe_max_new_tokens=12))
    history = [{"step": 5, "loss": 4.0}, {"step": 10, "loss": 3.0}, {"step": 10, "eval_loss": 3.5}]
    records = probe_checkpoint(tiny_model, tiny_tokenizer, questions, decodings, step=10, log_history=history)
    assert len(records) == 4 and {(r["decoding"], r["mode"]) for r in records} == {
        ("greedy", "raw"),
        ("greedy", "chat"),
        ("sampled", "raw"),
        ("sampled", "chat"),
    }
    first = records[0]
    assert (first["step"], first["checkpoint"], first["train_loss"], first["eval_loss"]) == (
        10,
        "checkpoint-10",
        3.0,
        3.5,
    )
    assert first["settings"] == decodings["greedy"].to_dict()
    assert 1 <= first["length_tokens"] <= 12 and "distinct_2" in first and "knowledge_contains" not in first
    chat = next(r for r in records if r["mode"] == "chat")
    assert chat["expected"] == "诗人" and chat["knowledge_contains"] in (0.0, 1.0)
    again = probe_checkpoint(tiny_model, tiny_tokenizer, questions, decodings, step=10, log_history=history)
    assert [r["answer"] for r in again] == [r["answer"] for r in records]  # fixed seeds: same answers
    other_seed = decoding_settings(ProbeArguments(probe_max_new_tokens=12, probe_seed=1))
    resampled = probe_checkpoint(
        tiny_model, tiny_tokenizer, questions, other_seed, step=10, log_history=history
    )
    assert [r["answer"] for r in resampled if r["decoding"] == "sampled"] != [
        r["answer"] for r in records if r["decoding"] == "sampled"
    ]


def record(step, qid, decoding="greedy", **extra):
    return {"step": step, "mode": "raw", "question_id": qid, "decoding": decoding, **extra}


def test_summarize_per_decoding_mode_and_group():
    records = [
        record(1, "a", distinct_2=1.0, repetitive=False, knowledge_contains=1.0, group="sft"),
        record(1, "b", distinct_2=0.5, repetitive=True, knowledge_contains=0.0, group="heldout"),
        record(1, "c", distinct_2=None, repetitive=True),
        {**record(1, "d", knowledge_contains=1.0, group="heldout"), "mode": "chat"},
        record(1, "a", "sampled", distinct_2=0.2, repetitive=False),
    ]
    s = summarize(records)
    assert s["probe/greedy/distinct_2"] == 0.75 and s["probe/greedy/repetitive"] == pytest.approx(2 / 3)
    assert s["probe/greedy/knowledge_contains"] == pytest.approx(2 / 3)
    assert (
        s["probe/greedy/knowledge_contains/raw"] == 0.5 and s["probe/greedy/knowledge_contains/chat"] == 1.0
    )
    assert (
        s["probe/greedy/knowledge_contains/raw/sft"],
        s["probe/greedy/knowledge_contains/raw/heldout"],
        s["probe/greedy/knowledge_contains/chat/heldout"],
    ) == (1.0, 0.0, 1.0)
    assert "probe/greedy/knowledge_contains/chat/sft" not in s  # no such question
    assert s["probe/sampled/distinct_2"] == 0.2 and "probe/sampled/knowledge_contains" not in s
    text = format_summary(7, s, n_questions=4, seconds=1.5, overhead=0.02)
    assert "checkpoint-7: 4 questions x 2 decodings in 1.5s (2.0%" in text
    assert "knowledge raw 50% (sft 100%, heldout 0%); chat 100% (heldout 100%)" in text


def test_losses_at():
    history = [
        {"step": 10, "loss": 3.0},
        {"step": 20, "loss": 2.0},
        {"step": 20, "eval_loss": 2.5},
        {"step": 30, "loss": 1.0},
    ]
    assert losses_at(history, 25) == {"train_loss": 2.0, "eval_loss": 2.5}
    assert losses_at(history, 5) == {"train_loss": None, "eval_loss": None}


def test_store_appends_skips_torn_lines_and_compacts(tmp_path):
    store = ProbeStore(tmp_path)
    (tmp_path / "checkpoint-2").mkdir()
    store.append(2, [record(2, "a"), record(2, "b")], tmp_path / "checkpoint-2")
    store.append(4, [record(4, "a"), record(4, "b")])
    with store.path.open("a") as f:
        f.write('{"step": 6, "mode": "raw", "question_id": "a", "deco')  # a crash mid-write
    assert [(r["step"], r["question_id"]) for r in store.records()] == [
        (2, "a"),
        (2, "b"),
        (4, "a"),
        (4, "b"),
    ]
    assert [json.loads(line)["question_id"] for line in (tmp_path / "checkpoint-2/probe.jsonl").open()] == [
        "a",
        "b",
    ]
    store.append(4, [record(4, "a", answer="new")])  # a re-probe: the newest entry wins
    assert [r.get("answer") for r in store.records() if r["step"] == 4] == ["new", None]
    assert store.compact(keep_until_step=2) == 4  # step-4 entries (3) and the torn line go
    assert [json.loads(line)["step"] for line in store.path.open()] == [2, 2]
    assert store.keys_at(2) == {(2, "raw", "a", "greedy"), (2, "raw", "b", "greedy")}
    assert store.compact() == 0
