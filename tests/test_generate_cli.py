"""`mini-lm generate` on every family (GPT-2-style and the BERT adapter) through the one loader."""

import io
import json
import re

import pytest
import torch

from mini_lm.cli import main
from mini_lm.config import ModelArguments
from mini_lm.generation import GenerationSettings, generate, load_for_generation, render_chat_prompt
from mini_lm.models import build_model
from mini_lm.tokenization import save_tokenizer

SIZES = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=64)


@pytest.fixture(scope="module", params=["qwen2", "bert"])
def model_dir(request, tmp_path_factory, tiny_tokenizer, tiny_bert_tokenizer):
    tok = tiny_bert_tokenizer if request.param == "bert" else tiny_tokenizer
    torch.manual_seed(0)
    model = build_model(ModelArguments(model_family=request.param, **SIZES), tok)
    path = tmp_path_factory.mktemp(request.param)
    model.save_pretrained(path)
    save_tokenizer(tok, path)
    return path


def test_generate_batched_with_timing_and_out_file(model_dir, tmp_path, capsys):
    out = tmp_path / "results.jsonl"
    prompts = ["宝玉笑道", "黛玉", "王夫人问"]
    rc = main(
        [
            "generate",
            str(model_dir),
            *sum((["--prompt", p] for p in prompts), []),
            "--greedy",
            "--max-new-tokens",
            "6",
            "--batch-size",
            "2",
            "--out",
            str(out),
        ]
    )
    printed = capsys.readouterr().out
    assert rc == 0
    timings = re.findall(r"^    (\d+) tokens in [\d.]+ s \(batch of (\d)\): [\d.]+ tokens/s", printed, re.M)
    assert [batch for _, batch in timings] == ["2", "2", "1"]  # one timing line per prompt
    assert f"wrote 3 results to {out}" in printed
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    model, tok = load_for_generation(str(model_dir))
    expected = generate(
        model, tok, prompts, GenerationSettings(do_sample=False, max_new_tokens=6), batch_size=2
    )
    assert [r["prompt"] for r in rows] == prompts
    assert [r["token_ids"] for r in rows] == [e.token_ids for e in expected]
    assert [r["text"] for r in rows] == [e.text for e in expected]
    assert [r["batch"] for r in rows] == [2, 2, 1] and all(r["seconds"] > 0 for r in rows)


def test_prompts_file_scoring_and_stop_flag(model_dir, tmp_path, capsys):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        '{"prompt": "宝玉", "expected": "笑"}\n\n{"prompt": "黛玉", "expected": "zzz"}\n{"prompt": "凤姐"}\n',
        encoding="utf-8",
    )
    model, tok = load_for_generation(str(model_dir))
    free = generate(model, tok, ["宝玉"], GenerationSettings(do_sample=False))[0].token_ids
    stop = tok.convert_ids_to_tokens(free[1])
    out = tmp_path / "r.jsonl"
    rc = main(
        [
            "generate",
            str(model_dir),
            "--prompts-file",
            str(prompts),
            "--limit",
            "2",
            "--greedy",
            "--stop",
            stop,
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 2 and rows[1]["hit"] is False
    assert rows[0]["stopped"] and rows[0]["token_ids"] == free[: free.index(free[1]) + 1]  # cut at --stop
    assert "continuations contain the expected answer" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--prompt", "宝玉", "--stop", "no-such-token"], "--stop no-such-token: not a single token"),
        (["--prompts-file", "{bad}"], "bad.jsonl:2: not valid JSON"),
        ([], "no prompts"),
        (["--prompt", "宝玉", "--batch-size", "0"], "--batch-size must be >= 1"),
    ],
)
def test_generate_bad_input(model_dir, tmp_path, capsys, argv, message):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "宝玉"}\n{"prompt": \n', encoding="utf-8")
    argv = [str(bad) if a == "{bad}" else a for a in argv]
    assert main(["generate", str(model_dir), *argv]) == 2
    assert message in capsys.readouterr().err


def test_chat_refuses_a_model_without_chat_template(tmp_path_factory, tiny_bert_tokenizer, capsys):
    path = tmp_path_factory.mktemp("bert_chat")
    build_model(ModelArguments(model_family="bert", **SIZES), tiny_bert_tokenizer).save_pretrained(path)
    tiny_bert_tokenizer.save_pretrained(path)
    assert main(["chat", str(path)]) == 2
    assert "no chat template" in capsys.readouterr().err


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory, tiny_tokenizer):
    """A tiny Qwen2 with a 64-token context and the ChatML template."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("qwen_chat")
    build_model(ModelArguments(model_family="qwen2", **SIZES), tiny_tokenizer).save_pretrained(path)
    save_tokenizer(tiny_tokenizer, path)
    return path


def test_chat_defaults_fit_a_tiny_context_and_say_so(qwen_dir, monkeypatch, capsys):
    """--max-new-tokens 256 on a small context once refused every message ("the 0 prompt tokens")."""
    monkeypatch.setattr("sys.stdin", io.StringIO("你好\n王伟是谁\n/quit\n"))
    assert main(["chat", str(qwen_dir), "--greedy"]) == 0
    out = capsys.readouterr().out
    assert (
        "replies up to 32 new tokens (half the model's 64-token context; --max-new-tokens to change)" in out
    )
    assert out.count("assistant> ") == 2 and "skipped" not in out
    assert main(["chat", str(qwen_dir), "--max-new-tokens", "64"]) == 2
    assert "--max-new-tokens 64 leaves no room for a message in the model's 64-token context" in (
        capsys.readouterr().err
    )


def test_generate_renders_chat_prompts_through_the_template(qwen_dir, tmp_path, capsys):
    """--chat, or a 'question' / 'messages' field in the prompts file (which once failed)."""
    prompts = tmp_path / "chat.jsonl"
    messages = [{"role": "system", "content": "简短回答"}, {"role": "user", "content": "王伟是谁"}]
    prompts.write_text(
        json.dumps({"question": "你好"}, ensure_ascii=False)
        + "\n"
        + json.dumps({"messages": messages}, ensure_ascii=False)
        + "\n"
        + json.dumps({"prompt": "宝玉"}, ensure_ascii=False)
        + "\n",
        encoding="utf-8",
    )
    out = tmp_path / "r.jsonl"
    flags = ["--greedy", "--max-new-tokens", "5", "--out", str(out)]
    assert main(["generate", str(qwen_dir), "--prompts-file", str(prompts), *flags]) == 0
    model, tok = load_for_generation(str(qwen_dir))
    rendered = [
        render_chat_prompt(tok, [{"role": "user", "content": "你好"}]),
        render_chat_prompt(tok, messages),
        "宝玉",  # a plain prompt stays a raw continuation
    ]
    expected = generate(model, tok, rendered, GenerationSettings(do_sample=False, max_new_tokens=5))
    assert [json.loads(line)["text"] for line in out.read_text(encoding="utf-8").splitlines()] == [
        e.text for e in expected
    ]
    assert "[你好] -> " in capsys.readouterr().out
    assert main(["generate", str(qwen_dir), "--prompt", "你好", "--chat", *flags]) == 0
    assert json.loads(out.read_text(encoding="utf-8"))["text"] == expected[0].text
    assert "batch size 1)" in capsys.readouterr().out  # one prompt is a batch of one, not "batch size 8"


@pytest.mark.parametrize(
    "record, message",
    [
        ({"messages": "hi"}, "chat.jsonl:1: 'messages' must be a list of {role, content} messages"),
        ({"text": "hi"}, "chat.jsonl:1: needs a string field 'prompt' or 'question', or 'messages'"),
    ],
)
def test_generate_bad_chat_records(qwen_dir, tmp_path, capsys, record, message):
    (tmp_path / "chat.jsonl").write_text(json.dumps(record) + "\n", encoding="utf-8")
    assert main(["generate", str(qwen_dir), "--prompts-file", str(tmp_path / "chat.jsonl")]) == 2
    assert message in capsys.readouterr().err


def test_generate_fits_the_context(qwen_dir, capsys):
    """60 new tokens after a prompt on a 64-token model: a GPT-2 crashed with an IndexError."""
    assert main(["generate", str(qwen_dir), "--prompt", "宝玉", "--greedy"]) == 0
    assert "at most 32 new tokens (half the model's 64-token context" in capsys.readouterr().out
    long = "王伟出生于1987年3月5日。" * 3
    assert main(["generate", str(qwen_dir), "--prompt", long, "--max-new-tokens", "40"]) == 2
    assert "tokens + --max-new-tokens 40 exceed the model's 64-token context" in capsys.readouterr().err
