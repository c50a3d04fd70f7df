"""Benchmarks: a model's multiple-choice accuracy per subject and overall, next to chance.

    spec = BenchmarkSpec("cmmlu", "../shared/data/eval/cmmlu", subjects=["agronomy", "anatomy"], limit=20)
    items = load_benchmark(spec, tokenizer)
    result = evaluate(model, tokenizer, items, spec)
    print(format_table(result)); write_json(result, "cmmlu.json")
    BenchmarkStore("runs/x").append(600, result)      # runs/x/benchmarks.jsonl, read by the report

Benchmarks: ``cmmlu`` (a folder of CMMLU CSVs, ``mini_lm/multiple_choice.py``) and ``mc`` (a
JSONL / YAML of multiple-choice records in the probe questions' format, ``{"id", "prompt" |
"question" | "messages", "choices", "answer", "group"}``; ``group`` is the subject).

Every choice is scored by ``mini_lm/scoring.py`` with the model in memory, so the same code runs
inside a training callback (no reload, no second framework, the BERT adapter included); it follows
lm-evaluation-harness's tokenization and prompts, and tests/test_lm_eval_agreement.py checks that
lm-eval 0.4 on the same model, CSVs and shots gives the same log-likelihoods and predictions.
Accuracy is lm-eval's ``acc_norm`` (log-likelihood per character, the probes' ``mc_accuracy``);
``accuracy_sum`` is its ``acc`` (summed log-likelihood). For CMMLU's one-letter choices the two
agree. ``p_value``: exact one-sided binomial test of the accuracy against guessing.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .metrics import SIGNIFICANCE, chance_p_value
from .multiple_choice import BENCHMARKS, BenchmarkDataError, MCItem, cmmlu_items
from .probing import ProbeConfigError, load_questions
from .records import read_records
from .scoring import best_choice, score_choices

RUN_FILE = "benchmarks.jsonl"  # run level: one line per (checkpoint, benchmark, subject)
OVERALL = "all"  # the subject name of the overall line


@dataclass(frozen=True)
class BenchmarkSpec:
    name: str  # "cmmlu" | "mc"
    data: str  # CMMLU: the folder holding dev/ and test/; mc: the file
    subjects: list[str] | None = None  # default: all
    shots: int = 0
    limit: int | None = None  # questions per subject (the first ones)
    split: str = "test"

    def __post_init__(self):
        if self.name not in BENCHMARKS:
            raise BenchmarkDataError(f"unknown benchmark {self.name!r}; choose from {', '.join(BENCHMARKS)}")
        if self.name == "mc" and self.shots:
            raise BenchmarkDataError("--shots: a multiple-choice file (benchmark mc) is scored 0-shot only")

    @property
    def label(self) -> str:
        """ "cmmlu 5-shot", "cmmlu 0-shot, 20/subject": what the report and the logs call it."""
        return f"{self.name} {self.shots}-shot" + (f", {self.limit}/subject" if self.limit else "")

    @property
    def slug(self) -> str:
        return f"{self.name}_{self.shots}shot" + (f"_limit{self.limit}" if self.limit else "")


def load_benchmark(spec: BenchmarkSpec, tokenizer) -> list[MCItem]:
    """The questions of a benchmark, prompts rendered (chat questions need the tokenizer's template)."""
    if spec.name == "cmmlu":
        return cmmlu_items(spec.data, spec.subjects, spec.shots, spec.limit, spec.split)
    try:
        questions = load_questions(spec.data)
    except ProbeConfigError as err:
        raise BenchmarkDataError(str(err)) from err
    free = [q.id for q in questions if q.kind != "choice"]
    if free:
        raise BenchmarkDataError(
            f"{spec.data}: {len(free)} record(s) without 'choices' (e.g. id {free[0]!r}); a benchmark "
            "file holds multiple-choice records only"
        )
    items, seen = [], {}
    for q in questions:
        subject = q.group or OVERALL
        if spec.subjects and subject not in spec.subjects:
            continue
        seen[subject] = seen.get(subject, 0) + 1
        if spec.limit is None or seen[subject] <= spec.limit:
            items.append(MCItem(q.id, subject, q.text, q.render(tokenizer), tuple(q.choices), q.answer))
    if not items:
        raise BenchmarkDataError(f"{spec.data}: no questions of subject(s) {spec.subjects}")
    return items


# --------------------------------------------------------------------------- scoring


@dataclass
class SubjectResult:
    subject: str
    n: int
    correct: int  # by log-likelihood per character (lm-eval's acc_norm)
    correct_sum: int  # by summed log-likelihood (lm-eval's acc)
    chance: float  # expected accuracy of guessing
    p_value: float  # of reaching ``correct`` by guessing

    @property
    def accuracy(self) -> float:
        return self.correct / self.n

    @property
    def accuracy_sum(self) -> float:
        return self.correct_sum / self.n

    @property
    def beats_chance(self) -> bool:
        return self.p_value < SIGNIFICANCE


@dataclass
class BenchmarkResult:
    spec: BenchmarkSpec
    subjects: list[SubjectResult]
    overall: SubjectResult
    predictions: list[dict]  # per question: id, subject, answer, predicted, predicted_sum, logprobs
    seconds: float
    model: str = ""
    meta: dict = field(default_factory=dict)  # step, checkpoint, ... of a run's checkpoint

    def to_dict(self) -> dict:
        rows = [*self.subjects, self.overall]
        return {
            "benchmark": self.spec.name,
            "label": self.spec.label,
            "settings": asdict(self.spec),
            "model": self.model,
            **self.meta,
            "seconds": self.seconds,
            "subjects": [_subject_dict(r) for r in rows],
            "predictions": self.predictions,
        }


def _subject_dict(r: SubjectResult) -> dict:
    return {
        **asdict(r),
        "accuracy": r.accuracy,
        "accuracy_sum": r.accuracy_sum,
        "beats_chance": r.beats_chance,
    }


def evaluate(
    model, tokenizer, items: list[MCItem], spec: BenchmarkSpec, batch_size: int = 32
) -> BenchmarkResult:
    """Score every item's choices; accuracy per subject and overall, each with chance and p."""
    began = time.perf_counter()
    scores = score_choices(
        model, tokenizer, [i.prompt for i in items], [list(i.choices) for i in items], batch_size=batch_size
    )
    predictions = [
        {
            "id": item.id,
            "subject": item.subject,
            "answer": item.answer,
            "predicted": best_choice(s, "char"),
            "predicted_sum": best_choice(s, "sum"),
            "logprobs": [c.logprob for c in s],
            "truncated": any(c.truncated for c in s),
        }
        for item, s in zip(items, scores)
    ]
    chances = [1 / len(i.choices) for i in items]
    subjects = list(dict.fromkeys(i.subject for i in items))
    per_subject = [
        _tally(subject, [(p, c) for p, c in zip(predictions, chances) if p["subject"] == subject])
        for subject in subjects
    ]
    overall = _tally(OVERALL, list(zip(predictions, chances)))
    return BenchmarkResult(spec, per_subject, overall, predictions, time.perf_counter() - began)


def _tally(subject: str, rows: list[tuple[dict, float]]) -> SubjectResult:
    correct = sum(p["predicted"] == p["answer"] for p, _ in rows)
    chances = [c for _, c in rows]
    return SubjectResult(
        subject,
        n=len(rows),
        correct=correct,
        correct_sum=sum(p["predicted_sum"] == p["answer"] for p, _ in rows),
        chance=sum(chances) / len(chances),
        p_value=chance_p_value(correct, chances),
    )


# --------------------------------------------------------------------------- output


def format_table(result: BenchmarkResult) -> str:
    """The result as a fixed-width table: a line per subject, then the overall line."""
    width = max(len(r.subject) for r in [*result.subjects, result.overall]) + 2
    title = f"{result.spec.label}" + (f" · {result.model}" if result.model else "")
    lines = [
        title,
        f"{'subject':<{width}} {'n':>5} {'acc':>7} {'acc sum':>8} {'chance':>7} {'p vs chance':>12}",
    ]
    for r in [*result.subjects, result.overall]:
        mark = " ✓" if r.beats_chance else ""
        lines.append(
            f"{r.subject:<{width}} {r.n:>5} {r.accuracy:>7.1%} {r.accuracy_sum:>8.1%} {r.chance:>7.1%} "
            f"{r.p_value:>12.4f}{mark}"
        )
    lines.append(
        f"✓: beats chance, p < {SIGNIFICANCE} (exact one-sided binomial test); {result.seconds:.1f}s"
    )
    return "\n".join(lines)


def write_json(results: BenchmarkResult | list[BenchmarkResult], path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = [r.to_dict() for r in results] if isinstance(results, list) else results.to_dict()
    path.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")
    return path


class BenchmarkStore:
    """RUN_DIR/benchmarks.jsonl: one line per (step, benchmark label, subject), newest wins."""

    def __init__(self, run_dir: str | os.PathLike):
        self.path = Path(run_dir) / RUN_FILE

    def append(self, step: int, result: BenchmarkResult) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        common = {"step": step, "benchmark": result.spec.name, "label": result.spec.label}
        lines = [{**common, **_subject_dict(r)} for r in [*result.subjects, result.overall]]
        with self.path.open("a", encoding="utf-8") as f:
            f.write("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines))

    def records(self) -> list[dict]:
        """Entries by step, the newest one per (step, label, subject); torn lines skipped."""
        if not self.path.is_file():
            return []
        found = [record for _, record in read_records(self.path, skip_bad_lines=True)]
        latest = {(r["step"], r["label"], r["subject"]): r for r in found}
        return sorted(latest.values(), key=lambda r: r["step"])

    def compact(self, keep_until_step: int) -> int:
        """Drop entries after ``keep_until_step`` (a resumed run restarts its timeline there)."""
        if not self.path.is_file():
            return 0
        found = [record for _, record in read_records(self.path, skip_bad_lines=True)]
        kept = [r for r in found if r["step"] <= keep_until_step]
        if len(kept) != len(found):
            tmp = self.path.with_suffix(".jsonl.tmp")
            tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept), encoding="utf-8")
            os.replace(tmp, self.path)
        return len(found) - len(kept)


def summary(result: BenchmarkResult) -> dict[str, float]:
    """Scalars for TensorBoard / W&B: benchmark/<name>/{accuracy,chance,p_value}[/<subject>]."""
    out = {}
    for r in [result.overall, *result.subjects]:
        suffix = "" if r is result.overall else f"/{r.subject}"
        for name in ("accuracy", "chance", "p_value"):
            out[f"benchmark/{result.spec.slug}/{name}{suffix}"] = getattr(r, name)
    return out
