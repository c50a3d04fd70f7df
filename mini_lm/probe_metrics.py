"""The probe-metric registry: every number the checkpoint probes report, in one place.

Each ``ProbeMetric`` says how it is computed from one answer, how answers are aggregated per
checkpoint, how it is labelled and formatted, which direction is better, and where it is shown.
The probe records (probes.jsonl), the summaries (TensorBoard / W&B scalars, console lines) and the
report's tables and plots all read ``METRICS``; nothing else lists metric names.

    records = [{"decoding": "greedy", "mode": "raw", **score_answer(Answer("厦门。", True, 3, 60, "厦门"))}]
    summarize(records)["probe/greedy/knowledge_contains"]               # 1.0
    parse_summary_key("probe/greedy/knowledge_contains/chat/heldout")   # ("greedy", "knowledge_contains", "chat/heldout")

Adding a metric = one entry here and its function (a pure one belongs in ``mini_lm/metrics.py``):

    ProbeMetric("has_digit", lambda a: any(c.isdigit() for c in a.text), "digits", "{:.0%}", better="higher", table=True)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import NamedTuple

from .metrics import answer_metrics, knowledge_scores, mean

PREFIX = "probe"  # summary keys: probe/<decoding>/<metric>[/<label>]


@dataclass
class Answer:
    """What a metric sees of one probe answer; shared intermediate results are computed once."""

    text: str  # the continuation only
    stopped: bool  # the model emitted a stop token (EOS / <|im_end|>)
    n_tokens: int  # new tokens generated
    max_new_tokens: int
    expected: str | None = None
    keywords: list[str] | None = None

    @cached_property
    def repetition(self) -> dict:
        return answer_metrics(
            self.text, stopped=self.stopped, n_tokens=self.n_tokens, max_new_tokens=self.max_new_tokens
        )

    @cached_property
    def knowledge(self) -> dict:
        return knowledge_scores(self.text, self.expected, self.keywords) if self.has_reference else {}

    @property
    def has_reference(self) -> bool:
        return self.expected is not None or bool(self.keywords)


def _always(answer: Answer) -> bool:
    return True


@dataclass(frozen=True)
class ProbeMetric:
    """One probe metric. ``compute(answer)`` -> its value for one answer (None: undefined, e.g. no
    4-gram in a 3-unit answer); ``applies(answer)`` False -> the answer is not scored at all (no
    field in its record, "n/a" where nothing is scored); ``aggregate`` turns a checkpoint's values
    into its summary (None: per answer only)."""

    name: str  # record field and summary-key segment
    compute: Callable[[Answer], float | int | bool | None]
    label: str  # console and table label
    fmt: str = "{:.2f}"
    better: str | None = None  # "higher" | "lower" | None (neither, e.g. a length)
    aggregate: Callable[[Iterable], float | None] | None = mean
    applies: Callable[[Answer], bool] = _always
    by_group: bool = False  # also summarized per question mode and mode/group ("raw", "chat/heldout")
    console: bool = False  # in the console summary line of each checkpoint
    table: bool = False  # a column of the report's table and of the W&B answers table
    plot: str | None = None  # the report figure it is drawn in: "repetition" | "knowledge"
    description: str = ""  # plot legend / axis text

    def format(self, value) -> str:
        return "n/a" if value is None else self.fmt.format(value)


def _repetition(key: str) -> Callable[[Answer], float | int | bool | None]:
    return lambda answer: answer.repetition[key]


def _knowledge(key: str) -> Callable[[Answer], float | None]:
    return lambda answer: answer.knowledge.get(key)


def _has_expected(answer: Answer) -> bool:
    return answer.expected is not None


def _has_reference(answer: Answer) -> bool:
    return answer.has_reference


# In display order: records, console lines and report columns follow it.
METRICS: dict[str, ProbeMetric] = {
    m.name: m
    for m in [
        ProbeMetric("distinct_1", _repetition("distinct_1"), "distinct-1", better="higher"),
        ProbeMetric(
            "distinct_2",
            _repetition("distinct_2"),
            "distinct-2",
            better="higher",
            console=True,
            table=True,
            plot="repetition",
            description="distinct-2",
        ),
        ProbeMetric(
            "repeated_4gram_rate",
            _repetition("repeated_4gram_rate"),
            "repeated-4gram",
            better="lower",
            console=True,
            table=True,
            plot="repetition",
            description="repeated 4-gram rate",
        ),
        ProbeMetric("loop_fraction", _repetition("loop_fraction"), "loop fraction", better="lower"),
        ProbeMetric(
            "longest_loop_units", _repetition("longest_loop_units"), "loop units", "{:.0f}", aggregate=None
        ),
        ProbeMetric(
            "longest_loop_repeats",
            _repetition("longest_loop_repeats"),
            "loop repeats",
            "{:.0f}",
            aggregate=None,
        ),
        ProbeMetric(
            "repetitive",
            _repetition("repetitive"),
            "repetitive",
            "{:.0%}",
            better="lower",
            console=True,
            table=True,
            plot="repetition",
            description="share repetitive",
        ),
        ProbeMetric("eos", _repetition("eos"), "EOS", "{:.0%}", better="higher", console=True, table=True),
        ProbeMetric(
            "hit_max_new_tokens",
            _repetition("hit_max_new_tokens"),
            "hit max",
            "{:.0%}",
            better="lower",
            table=True,
            plot="repetition",
            description="share hitting max_new_tokens",
        ),
        ProbeMetric(
            "length_tokens", _repetition("length_tokens"), "length", "{:.0f}", console=True, table=True
        ),
        ProbeMetric("length_units", _repetition("length_units"), "length (units)", "{:.0f}", aggregate=None),
        ProbeMetric(
            "knowledge_exact",
            _knowledge("exact"),
            "exact",
            "{:.0%}",
            better="higher",
            applies=_has_expected,
            by_group=True,
        ),
        ProbeMetric(
            "knowledge_contains",
            _knowledge("contains"),
            "knowledge",
            "{:.0%}",
            better="higher",
            applies=_has_expected,
            by_group=True,
            console=True,
            table=True,
            plot="knowledge",
            description="share of answers containing the expected fact",
        ),
        ProbeMetric(
            "knowledge_keyword_recall",
            _knowledge("keyword_recall"),
            "keyword recall",
            "{:.0%}",
            better="higher",
            applies=_has_reference,
            by_group=True,
        ),
    ]
}


def metrics(**where: bool | str) -> list[ProbeMetric]:
    """Registered metrics with the given attributes, in display order: ``metrics(table=True)``."""
    return [m for m in METRICS.values() if all(getattr(m, k) == v for k, v in where.items())]


def aggregated() -> list[ProbeMetric]:
    return [m for m in METRICS.values() if m.aggregate is not None]


def score_answer(answer: Answer) -> dict:
    """Every metric that applies to this answer: {name: value} (flat, for records and tables)."""
    return {m.name: m.compute(answer) for m in METRICS.values() if m.applies(answer)}


# --------------------------------------------------------------------------- summary keys


class SummaryKey(NamedTuple):
    decoding: str
    metric: str
    label: str | None = None  # "raw", "chat/heldout": a question mode, or mode/group


def summary_key(decoding: str, metric: str, label: str | None = None) -> str:
    """("greedy", "knowledge_contains", "chat/sft") -> "probe/greedy/knowledge_contains/chat/sft"."""
    return "/".join([PREFIX, decoding, metric] + ([label] if label else []))


def parse_summary_key(key: str) -> SummaryKey | None:
    """The inverse of ``summary_key``; None for other keys ("probe/seconds", "train/loss")."""
    parts = key.split("/", 3)
    if len(parts) < 3 or parts[0] != PREFIX:
        return None
    return SummaryKey(*parts[1:])


# --------------------------------------------------------------------------- aggregation


def summarize(records: list[dict]) -> dict[str, float]:
    """Per-checkpoint aggregates per decoding; ``by_group`` metrics also per mode and mode/group.

    [{"decoding": "greedy", "mode": "chat", "group": "sft", "distinct_2": 0.5, "knowledge_contains": 1.0}, ...]
    -> {"probe/greedy/distinct_2": 0.5, "probe/greedy/knowledge_contains": 1.0,
        "probe/greedy/knowledge_contains/chat": 1.0, "probe/greedy/knowledge_contains/chat/sft": 1.0, ...}
    """
    out: dict[str, float] = {}
    for decoding in dict.fromkeys(r["decoding"] for r in records):
        rows = [r for r in records if r["decoding"] == decoding]
        for metric in aggregated():
            _put(out, summary_key(decoding, metric.name), metric.aggregate(r.get(metric.name) for r in rows))
        for metric in [m for m in aggregated() if m.by_group]:
            for label, subset in question_groups([r for r in rows if r.get(metric.name) is not None]).items():
                value = metric.aggregate(r[metric.name] for r in subset)
                _put(out, summary_key(decoding, metric.name, label), value)
    return out


def _put(out: dict, key: str, value: float | None) -> None:
    if value is not None:
        out[key] = value


def question_groups(rows: list[dict]) -> dict[str, list[dict]]:
    """Rows by question mode ("raw", "chat") and by mode/group ("chat/heldout"): extraction from a
    chat question and recall from a raw prompt are different skills."""
    out: dict[str, list[dict]] = {}
    for mode in dict.fromkeys(r["mode"] for r in rows):
        out[mode] = [r for r in rows if r["mode"] == mode]
        for group in dict.fromkeys(r["group"] for r in out[mode] if r.get("group")):
            out[group_label(mode, group)] = [r for r in out[mode] if r.get("group") == group]
    return out


def group_label(mode: str, group: str | None = None) -> str:
    """The label of a question mode or mode/group: ("chat", "heldout") -> "chat/heldout"."""
    return f"{mode}/{group}" if group else mode


def split_group_label(label: str) -> tuple[str, str | None]:
    """The inverse of ``group_label``: "chat/heldout" -> ("chat", "heldout"); "raw" -> ("raw", None)."""
    mode, _, group = label.partition("/")
    return mode, group or None


def labels_by_mode(labels: list[str]) -> dict[str, list[str]]:
    """["raw", "raw/sft", "chat", "chat/sft"] -> {"raw": ["raw/sft"], "chat": ["chat/sft"]}."""
    out: dict[str, list[str]] = {}
    for label in labels:
        mode, group = split_group_label(label)
        out.setdefault(mode, [])
        if group:
            out[mode].append(label)
    return out


def summary_decodings(summary: dict[str, float]) -> list[str]:
    """Decodings a summary holds, in order."""
    return list(dict.fromkeys(k.decoding for k in map(parse_summary_key, summary) if k))


def summary_labels(
    summaries: Iterable[dict[str, float]], metric: str, decoding: str | None = None
) -> list[str]:
    """Group labels of ``metric`` ("raw", "raw/sft", "chat/heldout", ...) in order of appearance."""
    labels: dict[str, None] = {}
    for summary in summaries:
        for key in map(parse_summary_key, summary):
            if key and key.label and key.metric == metric and decoding in (None, key.decoding):
                labels.setdefault(key.label)
    return list(labels)


# --------------------------------------------------------------------------- console


def format_summary(
    step: int,
    summary: dict[str, float],
    n_questions: int,
    seconds: float | None = None,
    overhead: float | None = None,
) -> str:
    """Console lines for one checkpoint: the ``console`` metrics per decoding, time spent."""
    decodings = summary_decodings(summary)
    head = f"probe checkpoint-{step}: {n_questions} questions x {len(decodings)} decodings"
    if seconds is not None:
        head += f" in {seconds:.1f}s"
    if overhead is not None:
        head += f" ({overhead:.1%} of this session's wall time)"
    lines = [head]
    for decoding in decodings:
        shown = metrics(console=True)
        cells = [
            f"{m.label} {m.format(summary.get(summary_key(decoding, m.name)))}"
            for m in shown
            if not m.by_group
        ]
        cells += [_group_cell(m, summary, decoding) for m in shown if m.by_group]
        lines.append(f"  {decoding:>7}: " + "  ".join(cell for cell in cells if cell))
    return "\n".join(lines)


def _group_cell(metric: ProbeMetric, summary: dict[str, float], decoding: str) -> str:
    """ "knowledge raw 50% (sft 58%, heldout 42%); chat 0% (sft 0%)"; "" when nothing was scored."""
    labels = summary_labels([summary], metric.name, decoding)
    parts = []
    for mode, groups in labels_by_mode(labels).items():
        value = summary.get(summary_key(decoding, metric.name, mode))
        detail = ", ".join(
            f"{split_group_label(g)[1]} {metric.format(summary.get(summary_key(decoding, metric.name, g)))}"
            for g in groups
        )
        parts.append(f"{mode} {metric.format(value)}" + (f" ({detail})" if detail else ""))
    return f"{metric.label} " + "; ".join(parts) if parts else ""
