"""`mini-lm export RUN --merge --output DIR` never writes over work silently: an existing non-empty
DIR needs --force; the base model's own dir, the adapter (run) dir and any other adapter dir are
refused even with it. Each refusal is one line, exit code 2, and leaves every file as it was."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from mini_lm.cli import main as cli
from mini_lm.tokenization import save_tokenizer

from .conftest import tiny_qwen2_config


@pytest.fixture
def lora_run(tiny_tokenizer, tmp_path) -> tuple[Path, Path]:
    """(adapter dir, base dir) as a LoRA SFT run leaves them: tiny Qwen2 base, r=2 adapter."""
    torch.manual_seed(0)
    config = tiny_qwen2_config(tiny_tokenizer)
    base_dir, adapter_dir = tmp_path / "base", tmp_path / "sft_lora"
    AutoModelForCausalLM.from_config(config).save_pretrained(base_dir)
    save_tokenizer(tiny_tokenizer, base_dir)
    base = AutoModelForCausalLM.from_pretrained(base_dir)
    lora = get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    lora.save_pretrained(adapter_dir)
    save_tokenizer(tiny_tokenizer, adapter_dir)
    return adapter_dir, base_dir


def fingerprint(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def export(adapter_dir: Path, output: Path, *extra: str) -> int:
    return cli(["export", str(adapter_dir), "--merge", "--output", str(output), *extra])


def refused(capsys, *words: str) -> str:
    err = capsys.readouterr().err
    assert err.startswith("mini-lm export: error: ") and err.count("\n") == 1, err
    assert all(w in err for w in words), err
    return err


def test_export_refuses_an_existing_non_empty_output_unless_forced(lora_run, tmp_path, capsys):
    adapter_dir, _ = lora_run
    used = tmp_path / "merged"
    used.mkdir()
    (used / "notes.txt").write_text("a week of results", encoding="utf-8")
    (used / "config.json").write_text("{}", encoding="utf-8")
    before = fingerprint(used)
    assert export(adapter_dir, used) == 2
    refused(capsys, str(used), "not empty", "--force")
    assert fingerprint(used) == before

    assert export(adapter_dir, used, "--force") == 0  # the user asked for it
    merged = AutoModelForCausalLM.from_pretrained(used)
    assert not any("lora" in name for name, _ in merged.named_parameters())
    assert (used / "notes.txt").read_text(encoding="utf-8") == "a week of results"

    empty = tmp_path / "empty"
    empty.mkdir()
    assert export(adapter_dir, empty) == 0 and (empty / "config.json").is_file()  # empty: nothing to lose
    assert export(adapter_dir, tmp_path / "new" / "merged") == 0


@pytest.mark.parametrize("force", [[], ["--force"]])
def test_export_never_writes_into_the_base_model_or_an_adapter_dir(lora_run, tmp_path, capsys, force):
    adapter_dir, base_dir = lora_run
    other_run = tmp_path / "other_lora"
    other_run.mkdir()
    (other_run / "adapter_config.json").write_text("{}", encoding="utf-8")
    link = tmp_path / "base_link"
    link.symlink_to(base_dir, target_is_directory=True)
    cases = [
        (base_dir, "base model"),
        (link, "base model"),
        (adapter_dir, "adapter dir"),
        (other_run, "adapter dir"),
    ]
    for output, words in cases:
        before = {d: fingerprint(d) for d in (base_dir, adapter_dir, other_run)}
        assert export(adapter_dir, output, *force) == 2, output
        refused(capsys, str(output), words, "choose another --output")
        assert {d: fingerprint(d) for d in (base_dir, adapter_dir, other_run)} == before
    a_file = tmp_path / "merged.bin"
    a_file.write_bytes(b"x")
    assert export(adapter_dir, a_file, *force) == 2
    refused(capsys, "is a file")
    assert a_file.read_bytes() == b"x"
