"""`mini-lm generate` on every family (GPT-2-style and the BERT adapter) through the one loader."""

import json
import re

import pytest
import torch

from mini_lm.cli import main
from mini_lm.config import ModelArguments
from mini_lm.generation import GenerationSettings, generate, load_for_generation
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
