"""bench/crash_resume.py: its comparison and phase timing (fast, with a negative control each), and
one real run with two SIGKILLs (slow). No timing is asserted."""

import importlib.util
import json

import pytest
import torch
from safetensors.torch import save_file

from .conftest import REPO


def bench():
    spec = importlib.util.spec_from_file_location("crash_resume_bench", REPO / "bench/crash_resume.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fake_run(path, weight=1.0, losses=(3.0, 2.0), probes=None, extra_lines=()):
    path.mkdir(parents=True)
    save_file({"w": torch.full((2, 2), weight)}, path / "model.safetensors")
    history = [{"step": i + 1, "loss": loss} for i, loss in enumerate(losses)]
    (path / "trainer_state.json").write_text(json.dumps({"log_history": history}))
    records = (
        probes
        if probes is not None
        else [{"step": 2, "mode": "raw", "question_id": q, "decoding": "greedy", "answer": q} for q in "ab"]
    )
    lines = [json.dumps(r) for r in records] + list(extra_lines)
    (path / "probes.jsonl").write_text("\n".join(lines) + "\n")
    return path


def test_compare_reports_equal_runs_equal_and_each_kind_of_difference(tmp_path):
    crash = bench()
    ref = fake_run(tmp_path / "ref")
    same = crash.compare(ref, fake_run(tmp_path / "same"))
    assert same["weights_equal"] and same["losses_equal"] and same["max_weight_diff"] == 0
    assert (same["probes_lost"], same["probe_lines_duplicated"], same["probe_lines_torn"]) == (0, 0, 0)
    other = crash.compare(ref, fake_run(tmp_path / "other", weight=1.0 + 1e-7, losses=(3.0, 2.0000001)))
    assert not other["weights_equal"] and not other["losses_equal"]  # bit-equal means bit-equal
    first = {"step": 2, "mode": "raw", "question_id": "a", "decoding": "greedy", "answer": "a"}
    probes = crash.compare(
        ref, fake_run(tmp_path / "probes", probes=[first, first], extra_lines=['{"step": 2, "mo'])
    )
    assert (probes["probes_lost"], probes["probe_lines_duplicated"], probes["probe_lines_torn"]) == (1, 1, 1)
    assert not crash.compare(ref, tmp_path / "missing")["finished"]


def test_phase_durations_are_medians_from_each_marker_to_the_next():
    marks = [
        ("step", 1, 0.0),
        ("step", 2, 0.1),
        ("save", 2, 0.3),
        ("probe", 2, 0.5),
        ("step", 3, 1.5),
        ("end", 3, 1.6),
    ]
    assert bench().phase_durations(marks) == pytest.approx({"step": 0.1, "save": 0.2, "probe": 1.0})


def test_summary_counts_kills_by_phase_and_matching_runs():
    crash = bench()
    good = {
        "kills": [{"phase": "save"}, {"phase": "probe"}],
        "resumes": 2,
        "failed_resumes": [],
        "weights_equal": True,
        "losses_equal": True,
        "moved_aside": ["checkpoint-8"],
    }
    good |= dict.fromkeys(
        ["probes_lost", "probes_extra", "probe_lines_duplicated", "probe_lines_torn", "probe_answers_differ"],
        0,
    )
    bad = {**good, "kills": [{"phase": "step"}], "weights_equal": False, "failed_resumes": [1]}
    summary = crash.summarize([good, bad])
    assert summary["kills"] == 3 and summary["kills_by_phase"] == {"save": 1, "probe": 1, "step": 1}
    assert summary["runs_matching"] == 1 and summary["resumes_failed"] == 1 and summary["resumes"] == 4
    assert "| runs equal to the uninterrupted one" in crash.table(summary)


@pytest.mark.slow
def test_two_kills_and_resumes_end_bit_equal_to_the_uninterrupted_run(tmp_path, capsys):
    report = bench().main(
        ["--kills", "2", "--trials", "1", "--work", str(tmp_path / "work"), "--out", str(tmp_path / "r.json")]
    )
    summary = report["summary"]
    assert summary["kills"] == 2 and summary["resumes_failed"] == 0
    assert summary["runs_matching"] == summary["runs"] >= 1 and summary["probes_lost"] == 0
    assert json.loads((tmp_path / "r.json").read_text())["summary"] == summary
    assert "| SIGKILLs" in capsys.readouterr().out
