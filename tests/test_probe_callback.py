"""CheckpointProbe in real (tiny, CPU) Trainer runs of recipes/pretrain.py: files, reporters,
resume, the offline `mini-lm probe` / `mini-lm report` commands, and training left untouched."""

import contextlib
import json
from collections import Counter
from pathlib import Path

import pytest

from mini_lm.cli import main as cli
from mini_lm.data.synthetic import write_world
from mini_lm.probing import ProbeConfigError, load_questions

from .conftest import REPO, run_module_main

RECIPE = REPO / "recipes/pretrain.py"
TINY = [
    "--model_family",
    "qwen2",
    "--hidden_size",
    "32",
    "--num_hidden_layers",
    "2",
    "--num_attention_heads",
    "4",
    "--max_position_embeddings",
    "128",
    "--block_size",
    "32",
    "--tokenizer_vocab_size",
    "320",
    "--per_device_train_batch_size",
    "4",
    "--logging_steps",
    "1",
    "--disable_tqdm",
    "true",
    "--eval_strategy",
    "no",
    "--save_strategy",
    "steps",
    "--probe_max_new_tokens",
    "8",
]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    return write_world(tmp_path_factory.mktemp("world"), seed=0, n_people=20, bios_per_person=2)


def pretrain(*argv):
    return run_module_main(RECIPE, [str(a) for a in argv])


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.open(encoding="utf-8") if line.strip()]


def keys(records) -> list[tuple]:
    return [(r["step"], r["mode"], r["question_id"], r["decoding"]) for r in records]


def wandb_rows(run_dir: Path) -> list[list]:
    """Rows of every probe table increment one offline W&B run wrote."""
    return [
        row
        for f in sorted(run_dir.glob("files/media/table/probe/answers_*.table.json"))
        for row in json.loads(f.read_text())["data"]
    ]


@pytest.mark.slow
def test_probes_every_save_resume_without_loss_or_duplicates_then_report(world, tmp_path, monkeypatch):
    import wandb

    wandb.finish()  # W&B keeps one run and its settings (WANDB_DIR) per process: start clean,
    wandb.teardown()  # or an earlier in-process test's run receives this run's logs
    for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.delenv(var, raising=False)
    out = tmp_path / "run"
    questions = load_questions(world["probe_questions"])
    per_checkpoint = sum(2 if q.kind == "generation" else 1 for q in questions)  # greedy + sampled; MC once
    common = [
        *TINY,
        "--train_files",
        world["bios"],
        "--output_dir",
        out,
        "--save_steps",
        "3",
        "--probe_questions",
        world["probe_questions"],
        "--report_to",
        "wandb,tensorboard",
    ]
    pretrain(*common, "--max_steps", "6")

    for step in (3, 6):
        in_checkpoint = lines(out / f"checkpoint-{step}/probe.jsonl")
        assert len(in_checkpoint) == per_checkpoint and {r["step"] for r in in_checkpoint} == {step}
    run_level = lines(out / "probes.jsonl")
    assert len(run_level) == 2 * per_checkpoint and len(set(keys(run_level))) == len(run_level)
    first = run_level[0]
    assert first["settings"]["max_new_tokens"] == 8 and first["train_loss"] > 0
    assert {"distinct_2", "repeated_4gram_rate", "longest_loop_units", "eos", "knowledge_contains"} <= set(
        first
    )
    wandb_run = next((out / "wandb").glob("offline-run-*"))
    assert len(wandb_rows(wandb_run)) == 2 * per_checkpoint
    assert _tensorboard_text_steps(out) == [3, 6]
    wandb.finish()  # as a new process would: the Trainer leaves its W&B run open
    wandb.teardown()

    # A crash while checkpoint-6 was being probed: its entries never made it, a line is torn, and an
    # abandoned later timeline left an entry. Resuming must re-probe 6, drop step 99, keep step 3.
    kept = [
        line
        for line in (out / "probes.jsonl").read_text(encoding="utf-8").splitlines()
        if '"step": 3,' in line
    ]
    stale = json.dumps({**first, "step": 99})
    (out / "probes.jsonl").write_text("\n".join([*kept, stale]) + '\n{"step": 6, "mo', encoding="utf-8")
    pretrain(*common, "--max_steps", "9", "--resume_from_checkpoint", "last")

    run_level = lines(out / "probes.jsonl")
    assert Counter(r["step"] for r in run_level) == {3: per_checkpoint, 6: per_checkpoint, 9: per_checkpoint}
    assert len(set(keys(run_level))) == len(run_level)  # each (checkpoint, question, decoding) once
    resumed = [p for p in (out / "wandb").glob("offline-run-*") if p != wandb_run]
    assert len(resumed) == 1 and len(wandb_rows(resumed[0])) == 3 * per_checkpoint  # its table is cumulative
    wandb.finish()

    # offline, same questions and settings (probe_config.json): the same answers as during training
    during = {r["question_id"] + r["mode"] + r["decoding"]: r["answer"] for r in run_level if r["step"] == 9}
    assert cli(["probe", str(out), "--steps", "9"]) == 0
    after = {
        r["question_id"] + r["mode"] + r["decoding"]: r["answer"]
        for r in lines(out / "probes.jsonl")
        if r["step"] == 9
    }
    assert after == during and len(lines(out / "probes.jsonl")) == 3 * per_checkpoint  # replaced, not added

    # offline: new questions for one checkpoint merge in; the report reads everything
    extra = tmp_path / "extra.yaml"
    extra.write_text("questions:\n  - prompt: 李娜在\n", encoding="utf-8")
    assert cli(["probe", str(out), "--steps", "9", "--questions", str(extra), "--decoding", "greedy"]) == 0
    run_level = lines(out / "probes.jsonl")
    assert len(run_level) == 3 * per_checkpoint + 1 and ("李娜在", "greedy") in {
        (r["question_id"], r["decoding"]) for r in run_level if r["step"] == 9
    }
    assert cli(["report", str(out)]) == 0
    report = (out / "report/report.md").read_text(encoding="utf-8")
    for step in (3, 6, 9):
        assert f"### Step {step} | Loss: " in report
    assert (
        "[Naxue Tang was born in] → Naxue Tang was born in" in report
        and "| knowledge raw/heldout |" in report
    )
    for png in ("loss.png", "repetition.png", "knowledge.png"):
        data = (out / "report" / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, png


def _tensorboard_text_steps(out: Path) -> list[int]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    steps = []
    for events in (out / "runs").rglob("events.out.tfevents.*"):
        acc = EventAccumulator(str(events), size_guidance={"tensors": 0})
        acc.Reload()
        if "probe/answers/text_summary" in acc.Tags()["tensors"]:
            steps += [e.step for e in acc.Tensors("probe/answers/text_summary")]
            assert "probe/greedy/distinct_2" in acc.Tags()["scalars"]
    return sorted(steps)


@pytest.mark.slow
def test_multiple_choice_and_a_benchmark_slice_at_every_save(world, tmp_path, shared_data):
    """The world's multiple-choice questions are scored by likelihood at every save, next to the
    generated ones, and a 2-question-per-subject CMMLU slice goes to benchmarks.jsonl, TensorBoard
    and the report (a table, a plot, a milestone)."""
    out = tmp_path / "run"
    pretrain(
        *TINY,
        "--max_position_embeddings",  # CMMLU prompts in a 320-token BPE of the world's names: long
        "512",
        "--train_files",
        world["bios"],
        "--output_dir",
        out,
        "--max_steps",
        "4",
        "--save_steps",
        "2",
        "--probe_questions",
        world["probe_questions"],
        "--probe_decoding",
        "greedy",
        "--report_to",
        "tensorboard",
        "--probe_benchmark",
        "cmmlu",
        "--probe_benchmark_data",
        shared_data / "eval/cmmlu",
        "--probe_benchmark_subjects",
        "agronomy",
        "anatomy",
        "--probe_benchmark_limit",
        "2",
    )
    records = lines(out / "probes.jsonl")
    choice = [r for r in records if r["decoding"] == "likelihood"]
    assert Counter(r["step"] for r in choice) == {2: 48, 4: 48}  # every MC question, once per save
    assert all(len(r["choice_logprobs"]) == 4 and r["mc_chance"] == 0.25 for r in choice)
    benchmarks = lines(out / "benchmarks.jsonl")
    assert [(r["step"], r["subject"], r["n"]) for r in benchmarks] == [
        (step, subject, n) for step in (2, 4) for subject, n in (("agronomy", 2), ("anatomy", 2), ("all", 4))
    ]
    assert "benchmark/cmmlu_0shot_limit2/accuracy" in _tensorboard_scalars(out)
    assert cli(["report", str(out)]) == 0
    report = (out / "report/report.md").read_text(encoding="utf-8")
    assert "| multiple-choice accuracy beats chance (raw/heldout) |" in report
    assert (
        "| cmmlu 0-shot, 2/subject beats chance |" in report
        and "| step 4 | cmmlu 0-shot, 2/subject | 4 |" in report
    )
    assert (out / "report/multiple_choice.png").is_file() and (out / "report/benchmarks.png").is_file()


def _tensorboard_scalars(out: Path) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = set()
    for events in (out / "runs").rglob("events.out.tfevents.*"):
        acc = EventAccumulator(str(events))
        acc.Reload()
        tags |= set(acc.Tags()["scalars"])
    return tags


@pytest.mark.slow
def test_probing_does_not_change_training(world, tmp_path, monkeypatch):
    """Sampling reseeds the global RNG; with dropout on, training after a probe must see the same
    random numbers as without the probe. Negative control: without the RNG fork, losses change."""
    import mini_lm.callbacks.probe as probe_module

    def losses(name, *extra):
        out = tmp_path / name
        pretrain(
            *TINY,
            "--train_files",
            world["bios"],
            "--output_dir",
            out,
            "--max_steps",
            "6",
            "--save_steps",
            "2",
            "--dropout",
            "0.1",
            "--report_to",
            "none",
            *extra,
        )
        return [
            h["loss"]
            for h in json.loads((out / "trainer_state.json").read_text())["log_history"]
            if "loss" in h
        ]

    without = losses("without", "--probe", "false")
    assert not (tmp_path / "without/probes.jsonl").exists()
    assert losses("with") == without
    monkeypatch.setattr(probe_module.torch.random, "fork_rng", lambda **_: contextlib.nullcontext())
    assert losses("leaky") != without


def test_bad_probe_config_fails_before_training(world, tmp_path, caplog):
    bad = tmp_path / "bad.yaml"
    bad.write_text("questions:\n  - {prompt: a, expected: b, wrong: c}\n", encoding="utf-8")
    out = tmp_path / "run"
    with pytest.raises(ProbeConfigError, match=r"bad\.yaml: question 1: unknown field"):
        pretrain(
            *TINY,
            "--train_files",
            world["bios"],
            "--output_dir",
            out,
            "--max_steps",
            "2",
            "--save_steps",
            "2",
            "--report_to",
            "none",
            "--probe_questions",
            bad,
        )
    assert not (out / "checkpoint-2").exists()
    with pytest.raises(ProbeConfigError, match="exceeds the model's 128 positions"):
        pretrain(
            *TINY,
            "--train_files",
            world["bios"],
            "--output_dir",
            out,
            "--max_steps",
            "2",
            "--save_steps",
            "2",
            "--report_to",
            "none",
            "--probe_max_new_tokens",
            "120",
        )
    pretrain(
        *TINY,
        "--train_files",
        world["bios"],
        "--output_dir",
        out,
        "--max_steps",
        "1",
        "--save_strategy",
        "no",
        "--report_to",
        "none",
    )
    assert "save_strategy=no: no checkpoint will be written" in caplog.text


def test_a_failing_probe_is_logged_and_training_goes_on(world, tmp_path, monkeypatch, caplog):
    import mini_lm.callbacks.probe as probe_module

    def broken(*args, **kwargs):
        raise RuntimeError("CUDA out of memory (simulated)")

    monkeypatch.setattr(probe_module, "probe_checkpoint", broken)
    out = tmp_path / "run"
    pretrain(
        *TINY,
        "--train_files",
        world["bios"],
        "--output_dir",
        out,
        "--max_steps",
        "2",
        "--save_steps",
        "1",
        "--report_to",
        "none",
    )
    assert (out / "checkpoint-2").is_dir() and (out / "model.safetensors").is_file()
    assert caplog.text.count("probe of checkpoint-") == 2 and "simulated" in caplog.text
    assert not (out / "probes.jsonl").exists()
