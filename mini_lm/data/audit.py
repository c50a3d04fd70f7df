"""Pre-flight label audit: what the model will be trained on, printed before the first step.

    audit = build_audit(chat_stats, encoded, tokenizer, data_args)
    print(audit.render())      # a sample with ⟦supervised⟧ spans, fractions, drops and why
    audit.check()              # LabelAuditError: nothing supervised, or no <|im_end|> supervised
    json.dumps(audit.to_dict())  # the same figures for scripts and CI

Also ``mini-lm audit-data --config recipes/configs/....yaml [--json audit.json]``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from datasets import Dataset

from ..config import SFTDataArguments
from ..errors import UserError
from ..labels import IGNORE_INDEX
from ..tokenization import GENERATION_MARKER
from .chat import TEXT_ROLE, ChatStats, row_tools, template_messages

OPEN, CLOSE = "⟦", "⟧"
MARKER_CHECK_SAMPLES = 200


class LabelAuditError(UserError, ValueError):
    """The labels would train the model on nothing, or would never teach it to stop."""


@dataclass
class LabelAudit:
    chat: ChatStats
    max_length: int
    samples_in: int = 0
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)
    truncated: int = 0
    tokens: int = 0
    supervised: int = 0
    answers: int = 0
    answers_closed: int = 0  # supervised answers whose last supervised token ends the turn
    tool_calls: int = 0  # tool calls inside supervised answers
    tool_results: int = 0  # tool results in the context (prompt text: never supervised)
    tool_samples: int = 0  # kept samples that carry a tools list
    lengths: tuple[int, int, int] = (0, 0, 0)  # min, median, max tokens of kept samples
    examples: list[str] = field(default_factory=list)
    marker_check: tuple[int, int, int] | None = None  # (checked, ids differ, labels differ)
    eval_samples: int | None = None

    @property
    def supervised_fraction(self) -> float:
        return self.supervised / self.tokens if self.tokens else 0.0

    def problems(self) -> list[str]:
        """Hard failures: training would learn nothing, or never learn to stop."""
        out = []
        if self.kept == 0:
            out.append(f"no trainable sample: all {self.samples_in} dropped ({_counts(self.dropped)})")
        elif self.supervised == 0:
            out.append("no assistant token is supervised")
        elif self.answers_closed == 0:
            out.append(
                "no answer ends in a supervised end-of-turn token (<|im_end|>): the model would "
                "never learn to stop (check the chat template, or max_length if every answer is cut)"
            )
        if self.marker_check and self.marker_check[2]:
            out.append(
                f"labels disagree with the template's {{% generation %}} markers on "
                f"{self.marker_check[2]} of {self.marker_check[0]} samples"
            )
        return out

    def check(self) -> None:
        problems = self.problems()
        if problems:
            raise LabelAuditError("label audit failed: " + "; ".join(problems))

    def to_dict(self) -> dict:
        """Every figure of the audit, JSON-ready (``mini-lm audit-data --json``)."""
        out = _plain(self)
        out["chat"]["ignored_fields"] = dict(self.chat.ignored_fields)
        out["supervised_fraction"] = self.supervised_fraction
        out["problems"] = self.problems()
        return out

    def render(self) -> str:
        lines = ["=" * 30 + " SFT label audit " + "=" * 30]
        for path, info in self.chat.files.items():
            lines.append(f"file {path}: {info['format']}, {info['records']} records, {info['kept']} usable")
            if info["skipped"]:
                lines.append(f"  skipped: {_counts(info['skipped'])}")
            if info["ignored_fields"]:
                lines.append(
                    f"  WARNING fields not used, ignored (records): {_counts(info['ignored_fields'])}"
                )
        for spec, mix in self.chat.mix.items():
            if mix["weight"] != 1.0:
                lines.append(
                    f"mix {spec}: {mix['conversations']} x {mix['weight']:g} = {mix['samples']} samples"
                )
        if self.chat.skipped:
            lines.append(f"records skipped: {_counts(self.chat.skipped)}")
        if self.chat.trimmed_trailing_user or self.chat.trimmed_trailing_tool or self.chat.empty_user_turns:
            lines.append(
                f"trailing unanswered user turns trimmed: {self.chat.trimmed_trailing_user}; "
                f"trailing tool results trimmed: {self.chat.trimmed_trailing_tool}; "
                f"empty user turns kept: {self.chat.empty_user_turns}"
            )
        if self.chat.unfilled_placeholders:
            lines.append(
                f"WARNING placeholders without a value (set placeholders): "
                f"{dict(self.chat.unfilled_placeholders)}"
            )
        lines.append(
            f"samples: {self.samples_in} -> {self.kept} kept; dropped: {_counts(self.dropped) or 'none'}; "
            f"truncated to max_length={self.max_length}: {self.truncated}"
            + (f"; eval samples: {self.eval_samples}" if self.eval_samples is not None else "")
        )
        lines.append(
            f"tokens: {self.tokens:,}, supervised {self.supervised:,} ({self.supervised_fraction:.1%}); "
            f"sample length min/median/max {'/'.join(map(str, self.lengths))}"
        )
        lines.append(
            f"assistant answers supervised: {self.answers}, ending in a supervised end-of-turn token: "
            f"{self.answers_closed}"
        )
        if self.tool_samples or self.tool_calls or self.tool_results:
            lines.append(
                f"tools: {self.tool_samples} samples with a tools list (masked); tool calls supervised: "
                f"{self.tool_calls}; tool results in context (masked): {self.tool_results}"
            )
        if self.marker_check:
            checked, ids_differ, labels_differ = self.marker_check
            lines.append(
                f"cross-check with the template's {{% generation %}} markers: {checked} samples, "
                f"{labels_differ} label mismatches ({ids_differ} tokenized differently, not compared)"
            )
        for i, example in enumerate(self.examples):
            lines += [f"--- sample {i + 1}, supervised spans marked {OPEN}...{CLOSE}", example]
        lines += [f"PROBLEM: {p}" for p in self.problems()]
        lines.append("=" * 77)
        return "\n".join(lines)


def _plain(value):
    """Dataclasses, Counters and tuples -> dicts and lists (``dataclasses.asdict`` turns a Counter's
    items into counted tuples)."""
    if hasattr(value, "__dataclass_fields__"):
        return {name: _plain(getattr(value, name)) for name in value.__dataclass_fields__}
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def _counts(counter: Counter) -> str:
    return ", ".join(f"{reason}: {n}" for reason, n in counter.most_common())


def mark_supervised(tokenizer, input_ids: list[int], labels: list[int]) -> str:
    """Decode with supervised runs wrapped in ⟦ ⟧.

    ids of "<|im_start|>user\\nhi<|im_end|>\\n<|im_start|>assistant\\nyo<|im_end|>", labels on "yo<|im_end|>"
    -> "<|im_start|>user\\nhi<|im_end|>\\n<|im_start|>assistant\\n⟦yo<|im_end|>⟧"
    """
    pieces, run, supervised = [], [], None
    for token, label in zip(input_ids + [None], labels + [None]):
        flag = label is not None and label != IGNORE_INDEX
        if run and (token is None or flag != supervised):
            text = tokenizer.decode(run, skip_special_tokens=False)
            pieces.append(f"{OPEN}{text}{CLOSE}" if supervised else text)
            run = []
        run.append(token)
        supervised = flag
    return "".join(pieces)


def cross_check_generation_markers(tokenizer, encoded: Dataset, limit: int = MARKER_CHECK_SAMPLES):
    """Compare our labels with ``return_assistant_tokens_mask`` on untruncated, fully weighted samples.

    Returns (checked, ids differ, labels differ), or None when the template has no markers.
    """
    if not GENERATION_MARKER.search(tokenizer.chat_template or ""):
        return None
    checked = ids_differ = labels_differ = 0
    for row in encoded.select(range(min(limit, len(encoded)))):
        messages = row["messages"]
        if row["drop"] or row["truncated"] or messages[0]["role"] == TEXT_ROLE:
            continue
        if any(not m["loss_weight"] for m in messages):
            continue
        ref = tokenizer.apply_chat_template(
            template_messages(messages),
            tools=row_tools(row.get("tools")),
            tokenize=True,
            return_dict=True,
            return_assistant_tokens_mask=True,
        )
        checked += 1
        if list(ref["input_ids"]) != row["input_ids"]:
            ids_differ += 1
        elif list(ref["assistant_masks"]) != [int(label != IGNORE_INDEX) for label in row["labels"]]:
            labels_differ += 1
    return checked, ids_differ, labels_differ


def build_audit(chat: ChatStats, encoded: Dataset, tokenizer, args: SFTDataArguments) -> LabelAudit:
    """Counts over every encoded sample, plus rendered examples of the first kept ones."""
    columns = ["drop", "truncated", "n_tokens", "n_supervised", "n_answers", "n_answers_closed"]
    columns += ["n_tool_calls", "n_tool_results"]
    table = encoded.select_columns(columns).to_pandas()
    table["tools"] = [bool(t) for t in encoded["tools"]] if "tools" in encoded.column_names else False
    kept = table[table["drop"] == ""]
    lengths = kept["n_tokens"]
    audit = LabelAudit(
        chat=chat,
        max_length=args.max_length,
        samples_in=len(table),
        kept=len(kept),
        dropped=Counter(table.loc[table["drop"] != "", "drop"]),
        truncated=int(table["truncated"].sum()),
        tokens=int(lengths.sum()),
        supervised=int(kept["n_supervised"].sum()),
        answers=int(kept["n_answers"].sum()),
        answers_closed=int(kept["n_answers_closed"].sum()),
        tool_calls=int(kept["n_tool_calls"].sum()),
        tool_results=int(kept["n_tool_results"].sum()),
        tool_samples=int(kept["tools"].sum()),
        lengths=(int(lengths.min()), int(lengths.median()), int(lengths.max())) if len(kept) else (0, 0, 0),
    )
    shown = list(kept.index[: args.audit_samples])
    with_calls = kept.index[kept["n_tool_calls"] > 0]
    if args.audit_samples and len(with_calls) and not (kept.loc[shown, "n_tool_calls"] > 0).any():
        shown.append(with_calls[0])  # show how a tool conversation is trained too
    for i in shown:
        row = encoded[int(i)]
        audit.examples.append(
            f"[{row['record']}]\n" + mark_supervised(tokenizer, row["input_ids"], row["labels"])
        )
    audit.marker_check = cross_check_generation_markers(tokenizer, encoded)
    return audit
