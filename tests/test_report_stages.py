"""`mini-lm report` over pretraining -> SFT -> DPO: the stages laid end to end on one step axis, their
boundaries marked (a stages table, a heading where each stage's answers begin, a line in every
plot), and the DPO stage read as what it is (reward accuracy and margin; its loss is not a token loss)."""

import json
from pathlib import Path

from mini_lm.cli import main as cli
from mini_lm.generation import GenerationSettings
from mini_lm.probing import ProbeQuestion, ProbeStore, answer_record

QUESTION = ProbeQuestion("p1.zh.birthplace", "chat", "王伟出生在哪里？", expected="厦门", group="sft")


def fake_stage(
    run_dir: Path, trainer: str, steps: list[int], answers: list[str], history: list[dict]
) -> Path:
    """What a finished run leaves behind: run_info.json, trainer_state.json, probes.jsonl."""
    run_dir.mkdir(parents=True)
    (run_dir / "run_info.json").write_text(
        json.dumps({"trainer": trainer, "world_size": 1}), encoding="utf-8"
    )
    (run_dir / "trainer_state.json").write_text(json.dumps({"log_history": history}), encoding="utf-8")
    settings = GenerationSettings(do_sample=False, max_new_tokens=10)
    for step, answer in zip(steps, answers):
        context = {"step": step, "checkpoint": f"checkpoint-{step}", "train_loss": 1.0, "eval_loss": None}
        ProbeStore(run_dir).append(
            step, [{**context, **answer_record(QUESTION, "greedy", settings, answer, True, 4)}]
        )
    return run_dir


def test_three_stage_report_marks_the_boundaries_and_reads_dpo_as_dpo(tmp_path):
    pretrain = fake_stage(
        tmp_path / "pretrain",
        "Trainer",
        [50, 100],
        ["北京北京北京北京北京", "厦门"],
        [{"step": 100, "loss": 0.5}],
    )
    sft = fake_stage(tmp_path / "sft", "Trainer", [60], ["他出生在北京。"], [{"step": 60, "loss": 0.2}])
    dpo_logs = [
        {"step": 10, "loss": 0.69, "rewards/accuracies": 0.0, "rewards/margins": 0.0},
        {"step": 30, "loss": 0.31, "rewards/accuracies": 0.95, "rewards/margins": 1.4},
    ]
    dpo = fake_stage(tmp_path / "dpo", "PreferenceTrainer", [30], ["他出生在厦门。"], dpo_logs)
    assert cli(["report", str(pretrain), str(sft), str(dpo), "--out", str(tmp_path / "report")]) == 0
    report = (tmp_path / "report/report.md").read_text(encoding="utf-8")
    assert "| 3 | dpo | PreferenceTrainer | 30 | 160 → 190 |" in report  # 100 + 60 steps before it
    assert (
        "| 1 | pretrain | Trainer | 100 | 0 → 100 |" in report
        and "| 2 | sft | Trainer | 60 | 100 → 160 |" in report
    )
    headings = [line for line in report.splitlines() if line.startswith("## Stage ")]
    assert headings == ["## Stage 1: pretrain", "## Stage 2: sft", "## Stage 3: dpo"]
    assert report.index("## Stage 3: dpo") < report.index("### dpo · Step 30")
    assert "DPO reward accuracy 0.00 → 0.95, margin 0.000 → 1.400 (steps 10 → 30)" in report
    assert (
        "[王伟出生在哪里？] → 他出生在厦门。 ✓" in report
        and "[王伟出生在哪里？] → 他出生在北京。 ✗" in report
    )
    assert all((tmp_path / "report" / png).stat().st_size > 10_000 for png in ("loss.png", "knowledge.png"))
