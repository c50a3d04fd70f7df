"""Milestones in `mini-lm report`, computed on a hand-made probes.jsonl whose answers are known:
when greedy answers stop looping, end at EOS, each group is first answered right, and multiple
choice first beats chance; what was never measured gives no milestone (n/a), not "never"."""

import pytest

from mini_lm.generation import GenerationSettings
from mini_lm.milestones import find_milestones
from mini_lm.probe_metrics import summarize
from mini_lm.probing import ProbeQuestion, ProbeStore, answer_record, choice_record
from mini_lm.report import write_report
from mini_lm.scoring import ChoiceScore

SETTINGS = GenerationSettings(do_sample=False, max_new_tokens=20)
LOOP = "的的的的的的的的的的的的的的的的的的的的"
SFT = ProbeQuestion("sft", "raw", "王伟出生于", expected="厦门", group="sft")
HELD = ProbeQuestion("held", "raw", "李娜出生于", expected="成都", group="heldout")
FREE = ProbeQuestion("free", "raw", "中国的历史")  # nothing to compare with
CHAT = ProbeQuestion(
    "chat", "chat", "李白是谁？", [{"role": "user", "content": "李白是谁？"}], expected="诗人"
)
CHOICES = ["厦门", "成都", "北京", "上海"]

# step -> (answer text, stopped) per generated question
ANSWERS = {
    10: {"sft": (LOOP, False), "held": (LOOP, False), "free": (LOOP, False), "chat": (LOOP, False)},
    20: {
        "sft": ("厦门。", True),
        "held": ("北京。", False),
        "free": ("很长。", False),
        "chat": ("不知道", False),
    },
    30: {
        "sft": ("厦门。", True),
        "held": ("成都。", True),
        "free": ("很长。", True),
        "chat": ("不知道", True),
    },
}
MC_RIGHT = {
    10: {"sft": 1, "heldout": 0},
    20: {"sft": 3, "heldout": 0},
    30: {"sft": 3, "heldout": 3},
}  # of 3 each


def mc_records(step: int) -> list[dict]:
    """Six four-way questions, three per group; the first ``MC_RIGHT`` of each group answered right."""
    out = []
    for group, right in MC_RIGHT[step].items():
        for i in range(3):
            q = ProbeQuestion(
                f"{group}{i}", "raw", f"{group}{i}号出生于", group=group, choices=CHOICES, answer=0
            )
            q.expected = CHOICES[0]
            best = 0 if i < right else 2
            scores = [ChoiceScore(-1.0 if j == best else -5.0, 1, 2, 6, j == best) for j in range(4)]
            out.append(choice_record(q, scores))
    return out


def probes(step: int) -> list[dict]:
    context = {
        "step": step,
        "checkpoint": f"checkpoint-{step}",
        "train_loss": 3.0 - step / 10,
        "eval_loss": None,
    }
    generated = [
        answer_record(
            q, "greedy", SETTINGS, *ANSWERS[step][q.id], n_tokens=20 if not ANSWERS[step][q.id][1] else 3
        )
        for q in (SFT, HELD, FREE, CHAT)
    ]
    return [{**context, **r} for r in generated + mc_records(step)]


@pytest.fixture
def run(tmp_path):
    store = ProbeStore(tmp_path)
    for step in ANSWERS:
        store.append(step, probes(step))
    return tmp_path


def milestone_rows(report: str) -> dict[str, tuple[str, str]]:
    lines = report.split("## Milestones")[1].split("\n\n")[1].splitlines()[2:]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    return {what: (at, there) for at, what, there in cells}


def test_milestones_of_a_hand_made_run(run):
    report = write_report(run).read_text(encoding="utf-8")
    rows = milestone_rows(report)
    assert rows == {
        "greedy answers stop being repetitive (≤ 10%)": ("step 20", "repetitive 0%"),
        "raw/sft first answered right (greedy)": ("step 20", "knowledge 100%"),
        "multiple-choice accuracy beats chance (raw/sft)": (
            "step 20",
            "MC acc 100% vs chance 25%, p 0.016 ✓",
        ),
        "greedy answers end at EOS (≥ 50%)": ("step 30", "EOS 100%"),
        "raw/heldout first answered right (greedy)": ("step 30", "knowledge 100%"),
        "multiple-choice accuracy beats chance": ("step 30", "MC acc 100% vs chance 25%, p <0.001 ✓"),
        "multiple-choice accuracy beats chance (raw/heldout)": (
            "step 30",
            "MC acc 100% vs chance 25%, p 0.016 ✓",
        ),
        "chat first answered right (greedy)": ("not yet", "knowledge 0% at step 30"),
    }
    assert list(rows)[:3] == [  # a timeline: in the order they happened
        "greedy answers stop being repetitive (≤ 10%)",
        "raw/sft first answered right (greedy)",
        "multiple-choice accuracy beats chance (raw/sft)",
    ]
    assert (
        report.index("## Milestones") < report.index("## Plots") < report.index("## Maturity per checkpoint")
    )
    assert (run / "report/multiple_choice.png").stat().st_size > 10_000


def test_the_table_reads_na_where_an_answer_kind_has_nothing_to_score(run):
    report = write_report(run).read_text(encoding="utf-8")
    header = next(line for line in report.splitlines() if line.startswith("| step |"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    rows = {
        tuple(c.strip() for c in line.strip("|").split("|"))[3]: dict(
            zip(columns, (c.strip() for c in line.strip("|").split("|")))
        )
        for line in report.splitlines()
        if line.startswith("| 20 |")
    }
    assert rows["greedy"]["MC acc"] == "n/a" and rows["likelihood"]["knowledge"] == "n/a"
    assert rows["likelihood"]["MC acc"] == "50%" and rows["likelihood"]["chance"] == "25%"
    assert rows["likelihood"]["MC acc raw/sft"] == "100%" and rows["greedy"]["knowledge raw/sft"] == "100%"
    assert "p vs chance raw/sft" not in columns  # significance per group: in the milestones, not as columns
    assert (
        "[sft0号出生于] → sft0号出生于厦门 ✓" in report
    )  # the choice picked, marked like a generated answer


def test_what_was_never_measured_gives_no_milestone():
    free_only = [{**r, "step": 10} for r in probes(10) if r["question_id"] == "free"]
    found = find_milestones([(10, "step 10", summarize(free_only))])
    assert [m.what for m in found] == [
        "greedy answers stop being repetitive (≤ 10%)",
        "greedy answers end at EOS (≥ 50%)",
    ]  # no "answered right" and no "beats chance": nothing to score (n/a), not a flat 0%
    assert all(m.at is None for m in found)
