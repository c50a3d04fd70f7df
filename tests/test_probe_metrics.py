"""The probe-metric registry: one entry + its function is all a new metric takes to reach the
records, the summaries (TensorBoard / W&B / console), the report's table and plots."""

import pytest

from mini_lm.callbacks.probe import table_columns
from mini_lm.generation import GenerationSettings
from mini_lm.probe_metrics import (
    METRICS,
    Answer,
    ProbeMetric,
    format_summary,
    group_label,
    labels_by_mode,
    parse_summary_key,
    score_answer,
    split_group_label,
    summarize,
    summary_key,
)
from mini_lm.probing import ProbeQuestion, ProbeStore, answer_record
from mini_lm.report import write_report


@pytest.mark.parametrize(
    "parts, key",
    [
        (("greedy", "distinct_2", None), "probe/greedy/distinct_2"),
        (("sampled", "knowledge_contains", "chat"), "probe/sampled/knowledge_contains/chat"),
        (("greedy", "knowledge_contains", "chat/heldout"), "probe/greedy/knowledge_contains/chat/heldout"),
    ],
)
def test_summary_keys_are_built_and_parsed_by_one_pair_of_helpers(parts, key):
    assert summary_key(*parts) == key
    assert tuple(parse_summary_key(key)) == parts


def test_group_labels_are_built_and_parsed_by_one_pair_of_helpers():
    assert group_label("chat", "heldout") == "chat/heldout" and group_label("raw") == "raw"
    assert split_group_label("chat/heldout") == ("chat", "heldout") and split_group_label("raw") == (
        "raw",
        None,
    )
    assert labels_by_mode(["raw", "raw/sft", "chat", "chat/heldout"]) == {
        "raw": ["raw/sft"],
        "chat": ["chat/heldout"],
    }


@pytest.mark.parametrize("key", ["probe/seconds", "probe/overhead", "train/loss", "probe"])
def test_other_keys_are_not_metric_keys(key):
    assert parse_summary_key(key) is None


def test_every_metric_is_scored_only_where_it_applies():
    plain = score_answer(
        Answer("建筑、建筑、建筑、建筑、建筑", stopped=False, n_tokens=60, max_new_tokens=60)
    )
    assert plain["repetitive"] is True and plain["hit_max_new_tokens"] is True
    assert not any(name.startswith("knowledge_") for name in plain)  # nothing to compare with
    keywords_only = score_answer(Answer("唐代诗人", True, 4, 60, keywords=["唐代", "诗仙"]))
    assert keywords_only["knowledge_keyword_recall"] == 0.5 and "knowledge_contains" not in keywords_only
    assert list(score_answer(Answer("厦门", True, 2, 60, expected="厦门"))) == list(METRICS)  # registry order


def has_digit(answer: Answer) -> bool:
    return any(ch.isdigit() for ch in answer.text)


DIGITS = ProbeMetric(
    "has_digit",
    has_digit,
    "digits",
    "{:.0%}",
    better="higher",
    applies=lambda answer: answer.expected is not None,
    console=True,
    table=True,
    plot="repetition",
    description="share of answers with a digit",
)


def probe_records(step: int) -> list[dict]:
    settings = GenerationSettings(do_sample=False, max_new_tokens=10)
    answers = [
        (ProbeQuestion("a", "raw", "王伟出生于", expected="1987", group="sft"), "1987年。"),
        (ProbeQuestion("b", "raw", "李娜出生于", expected="1990", group="heldout"), "北京。"),
        (ProbeQuestion("c", "raw", "中国的历史"), "很长。"),  # no expected answer: has_digit does not apply
    ]
    context = {"step": step, "checkpoint": f"checkpoint-{step}", "train_loss": 1.5, "eval_loss": None}
    return [{**context, **answer_record(q, "greedy", settings, text, True, 3)} for q, text in answers]


def table_cells(report: str, step: int) -> dict[str, str]:
    """{column: cell} of the report table's row for ``step``."""

    def split(line):
        return [cell.strip() for cell in line.strip().strip("|").split("|")]

    lines = report.splitlines()
    header = split(next(line for line in lines if line.startswith("| step |")))
    return dict(zip(header, split(next(line for line in lines if line.startswith(f"| {step} |")))))


def test_a_metric_added_to_the_registry_reaches_records_summaries_report_and_tables(tmp_path, monkeypatch):
    monkeypatch.setitem(METRICS, "has_digit", DIGITS)  # the one entry (its function is above)
    records = probe_records(step=5)
    assert [r.get("has_digit") for r in records] == [True, False, None]  # per answer, where it applies

    summary = summarize(records)
    assert summary["probe/greedy/has_digit"] == 0.5  # aggregated over the answers it scored
    assert "digits 50%" in format_summary(5, summary, n_questions=3)  # the console line
    assert table_columns()[-1] == "has_digit"  # the W&B answers table

    ProbeStore(tmp_path).append(5, records)
    report = write_report(tmp_path).read_text(encoding="utf-8")
    cells = table_cells(report, step=5)
    assert cells["digits"] == "50%" and cells["knowledge raw/heldout"] == "0%"
    assert "↑ better: distinct-2, EOS, knowledge, digits" in report  # its direction, from the registry
    assert (tmp_path / "report/repetition.png").stat().st_size > 10_000


def test_a_column_with_nothing_to_score_reads_na_not_zero(tmp_path, monkeypatch):
    monkeypatch.setitem(METRICS, "has_digit", DIGITS)
    records = [r for r in probe_records(step=5) if r["question_id"] == "c"]  # no expected answers
    ProbeStore(tmp_path).append(5, records)
    report = write_report(tmp_path).read_text(encoding="utf-8")
    cells = table_cells(report, step=5)
    assert cells["digits"] == "n/a" and cells["knowledge"] == "n/a"
    assert "digits n/a" in format_summary(5, summarize(records), n_questions=1)
