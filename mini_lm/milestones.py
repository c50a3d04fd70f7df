"""Milestones of a run: the first checkpoint at which each sign of maturity shows.

    points = [(50, "step 50", summarize(records_50)), (100, "step 100", summarize(records_100)), ...]
    for m in find_milestones(points, benchmark_points):
        print(m.at or "not yet", m.what, m.detail)

Signs, each read from the checkpoint summaries (``probe_metrics.summarize``) in step order:

- greedy answers stop being repetitive: at most ``REPETITIVE_AT_MOST`` of them repetitive;
- greedy answers end at EOS: at least ``EOS_AT_LEAST`` of them stop at a stop token;
- each question group (``raw/sft``, ``chat/heldout``, or a mode without groups) is first answered
  right: a greedy answer contains its expected fact;
- multiple-choice accuracy first beats chance (overall and per group): p < ``SIGNIFICANCE``;
- a benchmark's overall accuracy first beats chance (``mini_lm/evaluation.py`` results).

A sign with nothing to read (no greedy decoding, no expected answers, no multiple choice) gives no
milestone; one not reached yet gives a milestone with ``at=None`` and the last value seen.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .metrics import SIGNIFICANCE
from .probe_metrics import (
    CHOICE_DECODING,
    MC_ACCURACY,
    MC_CHANCE,
    MC_P_VALUE,
    METRICS,
    format_p,
    labels_by_mode,
    summary_key,
    summary_labels,
)

REPETITIVE_AT_MOST = 0.1  # "stopped being repetitive": one greedy answer in ten, or fewer
EOS_AT_LEAST = 0.5  # "ends at EOS": half of the greedy answers, or more
GREEDY = "greedy"

# (x on the run's step axis, where it is: "step 150" / "sft · step 60", its summary)
Point = tuple[float, str, dict]


@dataclass(frozen=True)
class Milestone:
    what: str  # "greedy answers stop being repetitive (≤ 10%)"
    at: str | None  # the first checkpoint showing it ("step 150"); None: not reached yet
    x: float | None  # its position on the step axis (for ordering)
    detail: str  # the value there, or the last value seen


def find_milestones(points: list[Point], benchmarks: list[Point] = ()) -> list[Milestone]:
    """Every milestone the summaries can tell, reached ones first in step order, then the rest.
    ``benchmarks``: (x, where, {label: overall benchmark row}) per evaluated checkpoint."""
    points = sorted(points, key=lambda p: p[0])
    summaries = [s for _, _, s in points]
    found = [
        _first(
            points,
            f"greedy answers stop being repetitive (≤ {REPETITIVE_AT_MOST:.0%})",
            _value(summary_key(GREEDY, "repetitive")),
            lambda v: v <= REPETITIVE_AT_MOST,
            lambda v: f"repetitive {v:.0%}",
        ),
        _first(
            points,
            f"greedy answers end at EOS (≥ {EOS_AT_LEAST:.0%})",
            _value(summary_key(GREEDY, "eos")),
            lambda v: v >= EOS_AT_LEAST,
            lambda v: f"EOS {v:.0%}",
        ),
    ]
    for label in _leaf_labels(summary_labels(summaries, "knowledge_contains", GREEDY)):
        found.append(
            _first(
                points,
                f"{label} first answered right (greedy)",
                _value(summary_key(GREEDY, "knowledge_contains", label)),
                lambda v: v > 0,
                lambda v: f"knowledge {v:.0%}",
            )
        )
    for label in [None, *_leaf_labels(summary_labels(summaries, MC_P_VALUE, CHOICE_DECODING))]:
        found.append(_first(points, _mc_title(label), _mc_value(label), _mc_beats_chance, _mc_detail))
    for label in dict.fromkeys(label for _, _, rows in benchmarks for label in rows):
        found.append(
            _first(
                sorted(benchmarks, key=lambda p: p[0]),
                f"{label} beats chance",
                lambda rows, label=label: rows.get(label),
                _benchmark_beats_chance,
                _benchmark_detail,
            )
        )
    found = [m for m in found if m is not None]
    return sorted(found, key=lambda m: (m.x is None, m.x or 0))


def _first(points, what: str, read: Callable, reached: Callable, detail: Callable) -> Milestone | None:
    """The first point whose value (``read(summary)``; None: not measured there) is ``reached``."""
    last = None
    for x, where, summary in points:
        value = read(summary)
        if value is None:
            continue
        if reached(value):
            return Milestone(what, where, x, detail(value))
        last = (where, value)
    if last is None:
        return None  # nothing measured: no milestone (n/a), not "never"
    return Milestone(what, None, None, f"{detail(last[1])} at {last[0]}")


def _value(key: str) -> Callable[[dict], float | None]:
    return lambda summary: summary.get(key)


def _leaf_labels(labels: list[str]) -> list[str]:
    """Groups where a mode has them ("raw/sft", "raw/heldout"), else the mode itself ("chat")."""
    return [leaf for mode, groups in labels_by_mode(labels).items() for leaf in (groups or [mode])]


def _mc_title(label: str | None) -> str:
    return "multiple-choice accuracy beats chance" + (f" ({label})" if label else "")


def _mc_value(label: str | None) -> Callable[[dict], dict | None]:
    """The accuracy, chance and p of one label, together (None: no multiple choice there)."""

    def read(summary: dict) -> dict | None:
        values = {
            m: summary.get(summary_key(CHOICE_DECODING, m, label))
            for m in (MC_ACCURACY, MC_CHANCE, MC_P_VALUE)
        }
        return None if values[MC_P_VALUE] is None else values

    return read


def _mc_beats_chance(values: dict) -> bool:
    return values[MC_P_VALUE] < SIGNIFICANCE


def _benchmark_beats_chance(row: dict) -> bool:
    return row["p_value"] < SIGNIFICANCE


def _mc_detail(values: dict) -> str:
    accuracy, chance = (METRICS[m].format(values[m]) for m in (MC_ACCURACY, MC_CHANCE))
    return f"MC acc {accuracy} vs chance {chance}, p {format_p(values[MC_P_VALUE])}"


def _benchmark_detail(row: dict) -> str:
    return f"acc {row['accuracy']:.1%} vs chance {row['chance']:.1%} (n={row['n']}), p {format_p(row['p_value'])}"
