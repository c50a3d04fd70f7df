"""mini_lm/checkpoints.py with real (tiny, CPU) runs of recipes/pretrain.py: a checkpoint counts
only when complete, ``last`` takes the newest complete one and moves the others aside, a resumed
run's train_loss covers the whole run, and a rerun never silently replaces or continues another run."""

import json
import logging
import re
from collections import Counter
from pathlib import Path

import pytest
from safetensors.torch import load_file

from mini_lm.checkpoints import (
    SEAL,
    ResumeError,
    RunDirError,
    checkpoint_problem,
    newest_complete,
    seal_checkpoint,
)
from mini_lm.data.synthetic import write_world

from .conftest import REPO, run_module_main

RECIPE = REPO / "recipes/pretrain.py"
TINY = [
    "--model_family", "qwen2", "--hidden_size", "32", "--num_hidden_layers", "2",
    "--num_attention_heads", "4", "--max_position_embeddings", "64", "--block_size", "32",
    "--tokenizer_vocab_size", "320", "--per_device_train_batch_size", "4", "--logging_steps", "1",
    "--disable_tqdm", "true", "--report_to", "none", "--eval_strategy", "no",
    "--save_strategy", "steps", "--save_steps", "2", "--probe_max_new_tokens", "8",
    "--lr_scheduler_type", "constant",  # losses then do not depend on max_steps: 6 + resume to 8 == 8
]  # fmt: skip


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    world = write_world(tmp_path_factory.mktemp("world"), seed=0, n_people=20, bios_per_person=2)
    questions = Path(world["bios"]).parent / "two_questions.yaml"  # probes on, kept short
    questions.write_text("questions:\n  - prompt: 王伟出生于\n  - prompt: 李娜\n", encoding="utf-8")
    return {**world, "probe_questions": questions}


def pretrain(world, out, *argv):
    questions = ["--probe_questions", world["probe_questions"]]
    return run_module_main(
        RECIPE,
        [str(a) for a in [*TINY, *questions, "--train_files", world["bios"], "--output_dir", out, *argv]],
    )


def history(out: Path) -> list[dict]:
    return json.loads((out / "trainer_state.json").read_text())["log_history"]


def step_losses(out: Path) -> dict[int, float]:
    return {h["step"]: h["loss"] for h in history(out) if "loss" in h}


def probe_keys(out: Path) -> Counter:
    lines = (out / "probes.jsonl").read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines if line.strip()]
    return Counter((r["step"], r["mode"], r["question_id"], r["decoding"]) for r in records)


def fake_checkpoint(root: Path, step: int, seal: bool = True) -> Path:
    folder = root / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"x" * 100)
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": step, "epoch": 0.5}))
    if seal:
        seal_checkpoint(folder)
    return folder


def test_a_checkpoint_counts_only_when_its_seal_verifies(tmp_path):
    good = fake_checkpoint(tmp_path, 2)
    assert checkpoint_problem(good) is None
    state_size = (good / "trainer_state.json").stat().st_size
    assert json.loads((good / SEAL).read_text())["files"] == {
        "model.safetensors": 100,
        "trainer_state.json": state_size,
    }
    (good / "model.safetensors").write_bytes(b"x" * 50)  # torn write / half-deleted by rotation
    assert checkpoint_problem(good) == "model.safetensors has 50 bytes, the seal says 100"
    (good / "model.safetensors").unlink()
    assert checkpoint_problem(good) == "model.safetensors is missing"
    unsealed = fake_checkpoint(tmp_path, 4, seal=False)
    assert checkpoint_problem(unsealed) == f"no {SEAL} (the save did not finish)"
    # a run written without seals (another tool): the Trainer's criterion, a readable trainer_state.json
    legacy = tmp_path / "legacy"
    fake_checkpoint(legacy, 2, seal=False)
    broken = fake_checkpoint(legacy, 4, seal=False)
    (broken / "trainer_state.json").unlink()
    newest, skipped = newest_complete(legacy)
    assert newest == legacy / "checkpoint-2" and skipped == [(broken, "no readable trainer_state.json")]


@pytest.mark.slow
def test_last_skips_an_incomplete_checkpoint_and_the_resumed_run_equals_an_uninterrupted_one(
    world, tmp_path, caplog
):
    whole = tmp_path / "whole"
    whole_metrics = pretrain(world, whole, "--max_steps", "8")
    out = tmp_path / "run"
    pretrain(world, out, "--max_steps", "6")
    (out / "checkpoint-6" / "trainer_state.json").unlink()  # the kill while checkpoint-6 was written
    with caplog.at_level(logging.INFO, logger="mini_lm"):
        metrics = pretrain(world, out, "--max_steps", "8", "--resume_from_checkpoint", "last")
    aside = out / "incomplete-checkpoints" / "checkpoint-6"
    assert f"skipping checkpoint-6: trainer_state.json is missing; moved to {aside}" in caplog.text
    assert re.search(r"resuming from checkpoint-4 \(step 4, epoch 0\.0\d+\)", caplog.text)
    assert aside.is_dir() and (aside / "model.safetensors").is_file()  # moved, never deleted
    assert step_losses(out) == pytest.approx(step_losses(whole), abs=1e-6) and len(step_losses(out)) == 8
    # train_results.json covers the whole run, not only steps 5-8
    results = json.loads((out / "train_results.json").read_text())
    assert results["train_loss"] == pytest.approx(whole_metrics["train_loss"], rel=1e-6)
    assert metrics["train_loss"] == pytest.approx(sum(step_losses(whole).values()) / 8, rel=1e-6)
    # probes.jsonl: each kept checkpoint's answers once, as in the uninterrupted run
    assert probe_keys(out) == probe_keys(whole)


@pytest.mark.slow
def test_overwrite_moves_the_old_run_aside_so_last_cannot_continue_it(world, tmp_path):
    out = tmp_path / "run"
    pretrain(world, out, "--max_steps", "4", "--model_family", "gpt2")
    old_probes = probe_keys(out)
    pretrain(world, out, "--max_steps", "2", "--overwrite_output_dir", "true")
    (old,) = tmp_path.glob("run.old-*")
    assert sorted(p.name for p in old.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    assert json.loads((old / "config.json").read_text())["model_type"] == "gpt2"
    assert probe_keys(old) == old_probes  # the old run's probes went with it, all of them
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2"]
    assert json.loads((out / "config.json").read_text())["model_type"] == "qwen2"
    assert {step for step, *_ in probe_keys(out)} == {2}
    pretrain(world, out, "--max_steps", "4", "--resume_from_checkpoint", "last")
    assert json.loads((out / "checkpoint-4" / "config.json").read_text())["model_type"] == "qwen2"
    assert [h["step"] for h in history(out) if "loss" in h] == [1, 2, 3, 4]


def test_a_final_model_without_checkpoints_is_not_replaced_silently(world, tmp_path):
    out = tmp_path / "run"
    pretrain(world, out, "--max_steps", "2", "--save_strategy", "no", "--probe", "false")
    assert (out / "model.safetensors").is_file() and not list(out.glob("checkpoint-*"))
    with pytest.raises(RunDirError, match=r"already holds a run \(config.json, model.safetensors"):
        pretrain(world, out, "--max_steps", "2", "--model_family", "gpt2", "--probe", "false")
    assert json.loads((out / "config.json").read_text())["model_type"] == "qwen2"


def test_resume_arguments_that_cannot_work_fail_before_any_data_work(world, tmp_path):
    out = tmp_path / "run"
    fake_checkpoint(out, 2)
    broken = fake_checkpoint(out, 4)
    (broken / "trainer_state.json").unlink()
    with pytest.raises(ResumeError, match="checkpoint-4 is incomplete \\(trainer_state.json is missing\\)"):
        pretrain(world, out, "--resume_from_checkpoint", str(broken))
    with pytest.raises(RunDirError, match="both given"):
        pretrain(world, out, "--resume_from_checkpoint", "last", "--overwrite_output_dir", "true")
    with pytest.raises(ResumeError, match="no checkpoint dir at"):
        pretrain(world, out, "--resume_from_checkpoint", str(out / "checkpoint-9"))
    assert not (out / "tokenizer").exists()  # refused before the tokenizer was trained


def test_resuming_the_last_checkpoint_of_a_finished_run_trains_no_step_more(world, tmp_path):
    """Found by bench/crash_resume.py: a kill after the last checkpoint (during the final save or its
    probe), then `last`, made the Trainer train step max_steps + 1 (it checks max_steps only after a
    step) and save checkpoint-(max_steps + 1). Now the run only finishes: the final model is the last
    checkpoint's weights, the probes are those of the uninterrupted run."""
    whole = tmp_path / "whole"
    whole_metrics = pretrain(world, whole, "--max_steps", "4")
    out = tmp_path / "run"
    pretrain(world, out, "--max_steps", "4")
    for name in ("model.safetensors", "train_results.json", "all_results.json", "trainer_state.json"):
        (out / name).unlink()  # killed during the final save
    metrics = pretrain(world, out, "--max_steps", "4", "--resume_from_checkpoint", "last")
    assert not (out / "checkpoint-5").exists() and step_losses(out) == step_losses(whole)
    final, saved = load_file(out / "model.safetensors"), load_file(out / "checkpoint-4" / "model.safetensors")
    assert final.keys() == saved.keys() and all(final[k].equal(saved[k]) for k in final)
    assert metrics["train_loss"] == pytest.approx(whole_metrics["train_loss"], rel=1e-6)
    assert probe_keys(out) == probe_keys(whole)
