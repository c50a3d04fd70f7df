"""`mini-lm eval`: CMMLU (two subjects) and a multiple-choice JSONL on a tiny model -> a table and
JSON; on a run dir every checkpoint, into benchmarks.jsonl and the report; bad data -> one line."""

import json
import re
import shutil

import pytest

from mini_lm.cli import main as cli

from .eval_helpers import save_tiny_qwen


@pytest.fixture(scope="module")
def model_dir(shared_data, tmp_path_factory):
    return save_tiny_qwen(shared_data, tmp_path_factory.mktemp("tiny_qwen"))


def test_eval_on_two_cmmlu_subjects_prints_a_table_and_writes_json(model_dir, shared_data, tmp_path, capsys):
    out = tmp_path / "cmmlu.json"
    args = [
        "--benchmark",
        "cmmlu",
        "--data",
        str(shared_data / "eval/cmmlu"),
        "--limit",
        "4",
        "--out",
        str(out),
    ]
    assert cli(["eval", str(model_dir), "--subjects", "agronomy", "anatomy", *args]) == 0
    table = capsys.readouterr().out
    rows = {
        line.split()[0]: line.split()
        for line in table.splitlines()
        if line.split()[:1] in (["agronomy"], ["anatomy"], ["all"])
    }
    assert [rows[s][1] for s in ("agronomy", "anatomy", "all")] == ["4", "4", "8"]  # n
    assert all(rows[s][4] == "25.0%" for s in rows)  # chance of four choices
    data = json.loads(out.read_text(encoding="utf-8"))
    assert data["label"] == "cmmlu 0-shot, 4/subject" and len(data["predictions"]) == 8
    overall = data["subjects"][-1]
    right = sum(p["predicted"] == p["answer"] for p in data["predictions"])
    assert overall["subject"] == "all" and overall["correct"] == right and overall["accuracy"] == right / 8
    assert rows["all"][2] == f"{right / 8:.1%}" and all(len(p["logprobs"]) == 4 for p in data["predictions"])


def test_eval_on_a_run_dir_scores_every_checkpoint_into_the_report(model_dir, shared_data, tmp_path, capsys):
    run = tmp_path / "run"
    for step in (5, 10):
        shutil.copytree(model_dir, run / f"checkpoint-{step}")
    args = ["--benchmark", "cmmlu", "--data", str(shared_data / "eval/cmmlu"), "--subjects", "agronomy"]
    assert cli(["eval", str(run), *args, "--limit", "3", "--shots", "1"]) == 0
    assert "next: mini-lm report" in capsys.readouterr().out
    lines = [json.loads(line) for line in (run / "benchmarks.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [(r["step"], r["subject"]) for r in lines] == [
        (5, "agronomy"),
        (5, "all"),
        (10, "agronomy"),
        (10, "all"),
    ]
    results = json.loads((run / "eval/cmmlu_1shot_limit3.json").read_text(encoding="utf-8"))
    assert [r["step"] for r in results] == [5, 10] and results[0]["predictions"] == results[1]["predictions"]

    assert cli(["report", str(run)]) == 0
    report = (run / "report/report.md").read_text(encoding="utf-8")
    assert "## Benchmarks" in report and "| step 10 | cmmlu 1-shot, 3/subject | 3 |" in report
    assert "| cmmlu 1-shot, 3/subject beats chance |" in report  # a milestone, reached or "not yet"
    assert (run / "report/benchmarks.png").stat().st_size > 10_000


def test_eval_of_a_multiple_choice_jsonl(model_dir, tmp_path, capsys):
    path = tmp_path / "mc.jsonl"
    records = [
        {
            "id": "a",
            "prompt": "中国的首都是",
            "choices": ["北京", "上海", "广州"],
            "answer": "北京",
            "group": "geo",
        },
        {"id": "b", "prompt": "一加一等于", "choices": ["二", "三"], "answer": 0, "group": "math"},
        {"id": "c", "prompt": "二加二等于", "choices": ["五", "四"], "answer": "B", "group": "math"},
    ]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    assert (
        cli(
            [
                "eval",
                str(model_dir),
                "--benchmark",
                "mc",
                "--data",
                str(path),
                "--out",
                str(tmp_path / "o.json"),
            ]
        )
        == 0
    )
    assert "mc 0-shot" in capsys.readouterr().out
    data = json.loads((tmp_path / "o.json").read_text(encoding="utf-8"))
    assert [(s["subject"], s["n"], round(s["chance"], 4)) for s in data["subjects"]] == [
        ("geo", 1, 0.3333),
        ("math", 2, 0.5),
        ("all", 3, round((1 / 3 + 1) / 3, 4)),
    ]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--benchmark", "cmmlu", "--data", "{tmp}/nowhere"], r"nowhere/test: no CMMLU test files"),
        (
            ["--benchmark", "cmmlu", "--data", "{cmmlu}", "--subjects", "agronomyy"],
            r"no subject\(s\) \['agronomyy'\]",
        ),
        (
            ["--benchmark", "mc", "--data", "{tmp}/free.jsonl"],
            r"free\.jsonl: 1 record\(s\) without 'choices'",
        ),
        (["--benchmark", "mc", "--data", "{tmp}/free.jsonl", "--shots", "5"], r"scored 0-shot only"),
    ],
)
def test_bad_benchmark_data_is_one_clear_line(model_dir, shared_data, tmp_path, capsys, args, message):
    (tmp_path / "free.jsonl").write_text('{"prompt": "中国的历史"}\n', encoding="utf-8")
    args = [a.format(tmp=tmp_path, cmmlu=shared_data / "eval/cmmlu") for a in args]
    assert cli(["eval", str(model_dir), *args]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("mini-lm eval: error: ") and len(err.strip().splitlines()) == 1
    )  # before any weights
    assert re.search(message, err), err


def test_eval_needs_a_model_or_run_dir(tmp_path, capsys):
    assert cli(["eval", str(tmp_path), "--benchmark", "cmmlu", "--data", str(tmp_path)]) == 2
    assert "neither a model dir (config.json) nor a run dir with checkpoint-N" in capsys.readouterr().err
