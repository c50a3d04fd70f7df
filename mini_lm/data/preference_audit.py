"""Pre-flight preference audit: what DPO will compare, printed before the first step.

audit = build_preference_audit(stats, encoded, tokenizer, max_length=1024)
print(audit.render())   # a pair with the scored answers marked ⟦…⟧, lengths, cuts, drops and why
audit.check()           # PreferenceAuditError when no pair is left to train on
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from datasets import Dataset

from ..labels import IGNORE_INDEX
from .audit import mark_supervised
from .chat import ChatStats

IDENTICAL = "identical chosen and rejected"


@dataclass
class PreferenceStats:
    """What loading did: the SFT reader's counts per file and skip reason, plus the pairs dropped
    because both answers are the same."""

    chat: ChatStats = field(default_factory=ChatStats)
    identical: int = 0


class PreferenceAuditError(ValueError):
    """The preference data would give DPO nothing to compare."""


@dataclass
class PreferenceAudit:
    stats: PreferenceStats
    max_length: int
    pairs_in: int = 0
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)
    cut: Counter = field(default_factory=Counter)  # "both" | "chosen" | "rejected" -> pairs
    closed: tuple[int, int] = (0, 0)  # kept chosen / rejected answers ending in an end-of-turn token
    lengths: dict[str, tuple[int, int, int]] = field(
        default_factory=dict
    )  # prompt/chosen/rejected min/median/max
    examples: list[str] = field(default_factory=list)
    eval_pairs: int | None = None

    def problems(self) -> list[str]:
        if self.kept == 0:
            drops = dict(self.dropped) | ({IDENTICAL: self.stats.identical} if self.stats.identical else {})
            return [f"no trainable pair: all {self.pairs_in} dropped ({_counts(Counter(drops))})"]
        return []

    def check(self) -> None:
        problems = self.problems()
        if problems:
            raise PreferenceAuditError("preference audit failed: " + "; ".join(problems))

    def render(self) -> str:
        chat = self.stats.chat
        lines = ["=" * 30 + " preference audit " + "=" * 30]
        for path, info in chat.files.items():
            lines.append(
                f"file {path}: {info['format']}, {info['records']} records, {info['kept']} usable pairs"
            )
        for spec, mix in chat.mix.items():
            if mix["weight"] != 1.0:
                lines.append(
                    f"mix {spec}: {mix['conversations']} x {mix['weight']:g} = {mix['samples']} pairs"
                )
        if chat.skipped:
            lines.append(f"records skipped: {_counts(chat.skipped)}")
        if self.stats.identical:
            lines.append(f"pairs dropped, {IDENTICAL}: {self.stats.identical}")
        if chat.unfilled_placeholders:
            lines.append(f"WARNING placeholders without a value: {dict(chat.unfilled_placeholders)}")
        lines.append(
            f"pairs: {self.pairs_in} -> {self.kept} kept; dropped: {_counts(self.dropped) or 'none'}"
            + (f"; eval pairs: {self.eval_pairs}" if self.eval_pairs is not None else "")
        )
        lines += self._cut_lines()
        if self.lengths:
            lines.append(
                "tokens min/median/max: "
                + ", ".join(f"{name} {'/'.join(map(str, v))}" for name, v in self.lengths.items())
            )
        lines.append(
            f"answers ending in an end-of-turn token: chosen {self.closed[0]}/{self.kept}, "
            f"rejected {self.closed[1]}/{self.kept}"
        )
        for i, example in enumerate(self.examples):
            lines += [f"--- pair {i + 1}, scored answers marked ⟦...⟧", example]
        lines += [f"PROBLEM: {p}" for p in self.problems()]
        lines.append("=" * 78)
        return "\n".join(lines)

    def _cut_lines(self) -> list[str]:
        if not self.cut:
            return [f"answers cut to fit max_length={self.max_length}: none"]
        lines = [
            f"answers cut to fit max_length={self.max_length} (prompts kept whole): both {self.cut['both']}, "
            f"chosen only {self.cut['chosen']}, rejected only {self.cut['rejected']}"
        ]
        one_sided = self.cut["chosen"] + self.cut["rejected"]
        if one_sided:
            lines.append(
                f"WARNING {one_sided} pairs cut on one side only: there the chosen and rejected "
                "log-probabilities cover different lengths (raise max_length to avoid it)"
            )
        return lines


def _counts(counter: Counter) -> str:
    return ", ".join(f"{reason}: {n}" for reason, n in counter.most_common())


def render_pair(tokenizer, row: dict) -> str:
    """The prompt, then each answer with its scored tokens in ⟦ ⟧."""
    out = [f"[{row['record']}]"]
    for side in ("chosen", "rejected"):
        ids = row["prompt_ids"] + row[f"{side}_ids"]
        labels = [IGNORE_INDEX] * len(row["prompt_ids"]) + row[f"{side}_ids"]
        out.append(f"{side}: " + mark_supervised(tokenizer, ids, labels))
    return "\n".join(out)


def build_preference_audit(
    stats: PreferenceStats, encoded: Dataset, tokenizer, max_length: int, samples: int = 1
) -> PreferenceAudit:
    """Counts over every encoded pair, plus the rendered first ``samples`` kept ones."""
    table = encoded.select_columns(["drop", "cut", "chosen_closed", "rejected_closed"]).to_pandas()
    kept = table[table["drop"] == ""]
    audit = PreferenceAudit(
        stats=stats,
        max_length=max_length,
        pairs_in=len(table),
        kept=len(kept),
        dropped=Counter(table.loc[table["drop"] != "", "drop"]),
        cut=Counter(kept.loc[kept["cut"] != "", "cut"]),
        closed=(int(kept["chosen_closed"].sum()), int(kept["rejected_closed"].sum())),
    )
    if len(kept):
        for side in ("prompt", "chosen", "rejected"):
            lengths = encoded.select(kept.index)[f"{side}_ids"]
            sizes = sorted(len(ids) for ids in lengths)
            audit.lengths[side] = (sizes[0], sizes[len(sizes) // 2], sizes[-1])
    for i in kept.index[:samples]:
        audit.examples.append(render_pair(tokenizer, encoded[int(i)]))
    return audit
