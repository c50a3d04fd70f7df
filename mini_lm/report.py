"""``mini-lm report RUN_DIR [RUN_DIR ...]``: how a run matured, as Markdown with PNG plots.

    write_report(["runs/quickstart/pretrain", "runs/quickstart/sft"], "runs/quickstart/report")

The layout follows seed 000: a timeline of answers per checkpoint headed by its train/eval loss,
preceded by the run's milestones (``mini_lm/milestones.py``: when answers stopped looping, first
ended at EOS, each question group was first answered right, multiple choice and benchmarks first
beat chance), a table of per-checkpoint metrics, benchmark results (benchmarks.jsonl, written by
``mini-lm eval RUN_DIR`` and the probe callback's ``probe_benchmark``) and plots (loss,
repetition, knowledge, multiple choice, benchmarks).
Several run dirs are stages of one story (pretraining, then SFT from its model): they are laid
end to end on one step axis. Everything comes from files runs leave behind (probes.jsonl or
checkpoint-*/probe.jsonl, trainer_state.json), so a report can be made while a run is going.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from .evaluation import OVERALL, BenchmarkStore
from .metrics import SIGNIFICANCE
from .milestones import find_milestones
from .probe_metrics import (
    CHOICE_DECODING,
    MC_ACCURACY,
    MC_CHANCE,
    MC_P_VALUE,
    decoding_kind,
    format_p,
    labels_by_mode,
    metrics,
    split_group_label,
    summarize,
    summary_key,
    summary_labels,
)
from .probing import CHECKPOINT_FILE, ProbeStore, read_probe_records, record_key


@dataclass
class Stage:
    """One run dir; its steps are drawn from ``offset`` on (the steps of the stages before it)."""

    name: str
    run_dir: Path
    offset: int
    history: list[dict]
    records: list[dict]
    steps: list[int] = field(default_factory=list)  # probed checkpoints
    benchmarks: list[dict] = field(default_factory=list)  # benchmarks.jsonl: a line per step, label, subject

    @property
    def last_step(self) -> int:
        return max([h.get("step", 0) for h in self.history] + self.steps + [0])


@dataclass
class Point:
    """One probed checkpoint: its stage, step, position on the shared axis, records, aggregates."""

    stage: Stage
    step: int
    records: list[dict]
    summary: dict[str, float]

    @property
    def x(self) -> int:
        return self.stage.offset + self.step


def checkpoints(run_dir: Path) -> list[Path]:
    """checkpoint-N dirs sorted by N."""
    found = [
        p for p in run_dir.glob("checkpoint-*") if p.is_dir() and re.fullmatch(r"checkpoint-\d+", p.name)
    ]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def load_log_history(run_dir: Path) -> list[dict]:
    """trainer_state.json's log history: the run's own, else the newest checkpoint's."""
    candidates = [run_dir / "trainer_state.json"] + [
        c / "trainer_state.json" for c in reversed(checkpoints(run_dir))
    ]
    for path in candidates:
        if path.is_file():
            return json.loads(path.read_text(encoding="utf-8")).get("log_history", [])
    return []


def load_probe_records(run_dir: Path) -> list[dict]:
    """probes.jsonl, plus any checkpoint-*/probe.jsonl it lacks (e.g. copied from another machine)."""
    latest = {record_key(r): r for r in ProbeStore(run_dir).records()}
    for checkpoint in checkpoints(run_dir):
        for record in read_probe_records(checkpoint / CHECKPOINT_FILE):
            latest.setdefault(record_key(record), record)
    return sorted(latest.values(), key=lambda r: r["step"])


def load_stages(run_dirs: list[str | Path]) -> list[Stage]:
    stages: list[Stage] = []
    for run_dir in map(Path, run_dirs):
        if not run_dir.is_dir():
            raise FileNotFoundError(f"run dir not found: {run_dir}")
        records, history = load_probe_records(run_dir), load_log_history(run_dir)
        benchmarks = BenchmarkStore(run_dir).records()
        if not records and not history and not benchmarks:
            raise ValueError(
                f"{run_dir}: no probes.jsonl, checkpoint-*/probe.jsonl, benchmarks.jsonl or "
                "trainer_state.json to report on"
            )
        offset = stages[-1].offset + stages[-1].last_step if stages else 0
        steps = sorted({r["step"] for r in records})
        stages.append(Stage(run_dir.name, run_dir, offset, history, records, steps, benchmarks))
    return stages


def write_report(run_dirs: str | Path | list[str | Path], out_dir: str | Path | None = None) -> Path:
    """Write report.md and loss.png / repetition.png / knowledge.png; return the report path.
    Default ``out_dir``: <last run dir>/report."""
    stages = load_stages([run_dirs] if isinstance(run_dirs, (str, Path)) else list(run_dirs))
    out = Path(out_dir) if out_dir else stages[-1].run_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    points = [
        Point(stage, step, rows, summarize(rows))
        for stage in stages
        for step in stage.steps
        for rows in [[r for r in stage.records if r["step"] == step]]
    ]
    decodings = list(dict.fromkeys(r["decoding"] for stage in stages for r in stage.records))
    generated = [d for d in decodings if decoding_kind(d) == "generation"]
    plots = [
        name
        for name, made in (
            ("loss.png", plot_loss(stages, out / "loss.png")),
            ("repetition.png", plot_repetition(stages, points, generated, out / "repetition.png")),
            ("knowledge.png", plot_knowledge(stages, points, generated, out / "knowledge.png")),
            ("multiple_choice.png", plot_choice(stages, points, out / "multiple_choice.png")),
            ("benchmarks.png", plot_benchmarks(stages, out / "benchmarks.png")),
        )
        if made
    ]
    path = out / "report.md"
    path.write_text(render_markdown(stages, points, decodings, plots), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- markdown


def render_markdown(stages: list[Stage], points: list[Point], decodings: list[str], plots: list[str]) -> str:
    title = " → ".join(f"`{s.run_dir}`" for s in stages)
    lines = [
        f"# Run report: {title}",
        "",
        f"Generated {datetime.now():%Y-%m-%d %H:%M} by `mini-lm report`.",
        "",
    ]
    if len(stages) > 1:
        lines += _stage_boundaries(stages)
    for stage in stages:
        lines += _stage_facts(stage, len(stages) > 1)
    lines += _milestones(stages, points)
    if plots:
        lines += ["## Plots", ""] + [f"![{Path(p).stem}]({p})" for p in plots] + [""]
    lines += _benchmark_table(stages)
    if not points:
        return "\n".join(lines + ["No probe results yet (they are written at each checkpoint save).", ""])
    lines += ["## Maturity per checkpoint", "", *_metrics_table(points, decodings, len(stages) > 1), ""]
    lines += [
        "## Answers per checkpoint",
        "",
        "Each line: `[question] → answer`; ✓ / ✗ when an expected answer is known, "
        "🔁 when the answer is repetitive, ✂ when it hit max_new_tokens without stopping.",
        "",
    ]
    for i, point in enumerate(points):
        if len(stages) > 1 and (i == 0 or point.stage is not points[i - 1].stage):
            lines += [f"## Stage {stages.index(point.stage) + 1}: {point.stage.name}", ""]
        lines += _timeline_entry(point, decodings, len(stages) > 1)
    return "\n".join(lines)


def _stage_boundaries(stages: list[Stage]) -> list[str]:
    """Where each stage sits on the shared step axis (the plots draw a line at each start)."""
    rows = ["## Stages", "", "| # | stage | trainer | steps | on the shared axis |", "|---|---|---|---|---|"]
    for i, stage in enumerate(stages, 1):
        trainer = _run_info(stage).get("trainer") or ""
        last = stage.last_step
        rows.append(f"| {i} | {stage.name} | {trainer} | {last} | {stage.offset} → {stage.offset + last} |")
    return rows + [""]


def _run_info(stage: Stage) -> dict:
    path = stage.run_dir / "run_info.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _stage_facts(stage: Stage, named: bool) -> list[str]:
    facts = []
    info = _run_info(stage)
    if info:
        facts.append(
            f"world size {info.get('world_size')}, {info.get('precision')}, "
            f"{info.get('tokens_per_step') or '?'} tokens/step, global batch {info.get('global_batch_size')}"
        )
    losses = [h for h in stage.history if "loss" in h]
    if losses:
        facts.append(
            f"train loss {losses[0]['loss']:.3f} (step {losses[0]['step']}) → "
            f"{losses[-1]['loss']:.3f} (step {losses[-1]['step']})"
        )
    rewards = [h for h in stage.history if "rewards/accuracies" in h]  # a DPO stage (TRL's logs)
    if rewards:
        first, last = rewards[0], rewards[-1]
        facts.append(
            f"DPO reward accuracy {first['rewards/accuracies']:.2f} → {last['rewards/accuracies']:.2f}, "
            f"margin {first['rewards/margins']:.3f} → {last['rewards/margins']:.3f} "
            f"(steps {first['step']} → {last['step']}); its loss is the DPO loss, not a token loss"
        )
    seen: dict[str, dict] = {}
    for r in stage.records:
        seen.setdefault(r["decoding"], r["settings"])
    for name, settings in seen.items():
        sampling_only = ("temperature", "top_k", "top_p") if not settings.get("do_sample") else ()
        shown = {k: v for k, v in settings.items() if v is not None and k not in sampling_only}
        facts.append(f"decoding `{name}`: " + ", ".join(f"{k}={v}" for k, v in shown.items()))
    head = [f"**{stage.name}** (`{stage.run_dir}`)", ""] if named else []
    return head + [f"- {f}" for f in facts] + [""]


def _where(stage: Stage, step: int, named: bool) -> str:
    return f"{stage.name} · step {step}" if named else f"step {step}"


def _milestones(stages: list[Stage], points: list[Point]) -> list[str]:
    """The header timeline: when each sign of maturity first showed (``mini_lm/milestones.py``)."""
    named = len(stages) > 1
    probed = [(p.x, _where(p.stage, p.step, named), p.summary) for p in points]
    evaluated = [
        (stage.offset + step, _where(stage, step, named), rows)
        for stage in stages
        for step in dict.fromkeys(r["step"] for r in stage.benchmarks)
        for rows in [
            {r["label"]: r for r in stage.benchmarks if r["step"] == step and r["subject"] == OVERALL}
        ]
    ]
    found = find_milestones(probed, evaluated)
    if not found:
        return []
    rows = ["| first at | milestone | there |", "|---|---|---|"]
    rows += [f"| {m.at or 'not yet'} | {m.what} | {m.detail} |" for m in found]
    return ["## Milestones", "", *rows, ""]


def _benchmark_table(stages: list[Stage]) -> list[str]:
    """Benchmark accuracy per evaluated checkpoint, with chance, significance and each subject."""
    named = len(stages) > 1
    rows = []
    for stage in stages:
        for r in [r for r in stage.benchmarks if r["subject"] == OVERALL]:
            subjects = [
                s
                for s in stage.benchmarks
                if s["step"] == r["step"] and s["label"] == r["label"] and s["subject"] != OVERALL
            ]
            detail = ", ".join(f"{s['subject']} {s['accuracy']:.0%}" for s in subjects)
            rows.append(
                f"| {_where(stage, r['step'], named)} | {r['label']} | {r['n']} | {r['accuracy']:.1%} "
                f"| {r['chance']:.1%} | {format_p(r['p_value'])} | {detail} |"
            )
    if not rows:
        return []
    head = [
        "| checkpoint | benchmark | n | accuracy | chance | p vs chance | per subject |",
        "|---|---|---|---|---|---|---|",
    ]
    note = f"✓: beats chance (p < {SIGNIFICANCE}, exact one-sided binomial test); from benchmarks.jsonl (`mini-lm eval RUN_DIR`, or `probe_benchmark` at every save)."
    return ["## Benchmarks", "", *head, *rows, "", note, ""]


def _metrics_table(points: list[Point], decodings: list[str], named: bool) -> list[str]:
    """One row per checkpoint and decoding: the registry's ``table`` metrics of the kinds of answers
    the run has, then its ``group_columns`` metrics per question group ("knowledge raw/heldout");
    "n/a" where nothing was scored."""
    kinds = {decoding_kind(d) for d in decodings}
    columns = [m for m in metrics(table=True) if m.kind in kinds]
    grouped = [(m, label) for m in columns if m.group_columns for label in _labels(points, m.name)]
    header = (["stage"] if named else []) + ["step", "train loss", "eval loss", "decoding"]
    header += [m.label for m in columns] + [f"{m.label} {label}" for m, label in grouped]
    rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for point in points:
        first = point.records[0]
        for decoding in decodings:
            cells = ([point.stage.name] if named else []) + [
                str(point.step),
                _num(first.get("train_loss")),
                _num(first.get("eval_loss")),
                decoding,
            ]
            cells += [m.format(point.summary.get(summary_key(decoding, m.name))) for m in columns]
            cells += [
                m.format(point.summary.get(summary_key(decoding, m.name, label))) for m, label in grouped
            ]
            rows.append("| " + " | ".join(cells) + " |")
    return rows + ["", _directions(columns)]


def _directions(columns) -> str:
    """Which way is better, from the registry: "↑ better: distinct-2, EOS; ↓ better: repetitive"."""
    parts = [
        f"{arrow} better: " + ", ".join(m.label for m in columns if m.better == better)
        for arrow, better in (("↑", "higher"), ("↓", "lower"))
        if any(m.better == better for m in columns)
    ]
    return "; ".join(parts)


def _labels(points: list[Point], metric: str) -> list[str]:
    return summary_labels((p.summary for p in points), metric)


def _timeline_entry(point: Point, decodings: list[str], named: bool) -> list[str]:
    first = point.records[0]
    head = f"### {point.stage.name} · " if named else "### "
    head += f"Step {point.step} | Loss: {_num(first.get('train_loss'))}"
    if first.get("eval_loss") is not None:
        head += f" | Eval loss: {_num(first['eval_loss'])}"
    lines = [head, ""]
    for decoding in decodings:
        rows = [r for r in point.records if r["decoding"] == decoding]
        if not rows:
            continue
        lines += [f"**{decoding}**", "```"]
        for r in rows:
            marks = (
                {1.0: " ✓", 0.0: " ✗"}.get(r.get("knowledge_contains", r.get(MC_ACCURACY)), "")
                + (" 🔁" if r.get("repetitive") else "")
                + (" ✂" if r.get("hit_max_new_tokens") else "")
            )
            shown = r["question"] + r["answer"] if r["mode"] == "raw" else r["answer"]
            lines.append(f"[{r['question']}] → {_one_line(shown)}{marks}")
        lines += ["```", ""]
    return lines


def _num(value) -> str:
    return "" if value is None else f"{value:.4f}"


def _one_line(text: str) -> str:
    return text.replace("\r", "").replace("\n", "↵")


# --------------------------------------------------------------------------- plots


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed, safe in a training process
    import matplotlib.pyplot as plt

    return plt


def _axes(plt, stages: list[Stage], ncols: int = 1, sharey: bool = False):
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, ncols, figsize=(max(8, 6 * ncols), 4.5), squeeze=False, sharey=sharey)
    for ax in axes[0]:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        for stage in stages[1:]:  # where each later stage starts on the shared step axis
            ax.axvline(stage.offset, color="black", linewidth=1)
            ax.annotate(
                f" {stage.name} →",
                (stage.offset, 1),
                xycoords=("data", "axes fraction"),
                va="top",
                fontsize=8,
            )
        ax.set_xlabel("step" if len(stages) == 1 else "step (" + " → ".join(s.name for s in stages) + ")")
    return fig, axes[0]


def _save(plt, fig, path: Path) -> bool:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_loss(stages: list[Stage], path: Path) -> bool:
    if not any("loss" in h or "eval_loss" in h for s in stages for h in s.history):
        return False
    plt = _pyplot()
    fig, (ax,) = _axes(plt, stages)
    for i, stage in enumerate(stages):
        train = [(stage.offset + h["step"], h["loss"]) for h in stage.history if "loss" in h]
        evals = [(stage.offset + h["step"], h["eval_loss"]) for h in stage.history if "eval_loss" in h]
        if train and any("rewards/accuracies" in h for h in stage.history):  # DPO: another objective
            ax.plot(*zip(*train), color="tab:green", label=f"DPO loss ({stage.name})")
        elif train:
            ax.plot(*zip(*train), color="tab:blue", label="train loss" if i == 0 else None)
        if evals:
            ax.plot(*zip(*evals), "o-", color="tab:orange", label="eval loss" if i == 0 else None)
        for j, step in enumerate(stage.steps):
            ax.axvline(
                stage.offset + step,
                color="grey",
                linestyle=":",
                linewidth=1,
                label="probed checkpoint" if i == j == 0 else None,
            )
    ax.set(ylabel="loss", title="Loss")
    ax.legend()
    return _save(plt, fig, path)


def plot_repetition(stages: list[Stage], points: list[Point], decodings: list[str], path: Path) -> bool:
    if not points:
        return False
    plt = _pyplot()
    fig, axes = _axes(plt, stages, ncols=len(decodings), sharey=True)
    for ax, decoding in zip(axes, decodings):
        for metric in metrics(plot="repetition"):
            values = [p.summary.get(summary_key(decoding, metric.name)) for p in points]
            ax.plot(
                [p.x for p in points],
                [float("nan") if v is None else v for v in values],
                "o-",
                label=metric.description or metric.label,
            )
        ax.set(title=f"Repetition ({decoding})", ylim=(-0.02, 1.02))
    axes[0].set_ylabel("rate")
    axes[-1].legend(loc="best", fontsize=8)
    return _save(plt, fig, path)


def plot_choice(stages: list[Stage], points: list[Point], path: Path) -> bool:
    """Multiple-choice accuracy (the registry's ``plot="choice"`` metrics) per mode and question
    group, with the chance level dotted; a filled marker where it beats chance (p < 0.05)."""
    labels = _labels(points, MC_ACCURACY)
    modes = labels_by_mode(labels)
    if not modes:
        return False
    plt = _pyplot()
    fig, axes = _axes(plt, stages, ncols=len(modes), sharey=True)
    for ax, (mode, groups) in zip(axes, modes.items()):
        for j, label in enumerate(groups or [mode]):
            for metric in metrics(plot="choice"):
                xs = [p.x for p in points]
                ys = [
                    p.summary.get(summary_key(CHOICE_DECODING, metric.name, label), float("nan"))
                    for p in points
                ]
                (line,) = ax.plot(xs, ys, "-", color=f"C{j}", label=split_group_label(label)[1] or "all")
                beats = [
                    (x, y)
                    for p, x, y in zip(points, xs, ys)
                    if p.summary.get(summary_key(CHOICE_DECODING, MC_P_VALUE, label), 1.0) < SIGNIFICANCE
                ]
                ax.plot(xs, ys, "o", mfc="none", color=line.get_color())
                if beats:
                    ax.plot(*zip(*beats), "o", color=line.get_color())
            chance = [
                p.summary.get(summary_key(CHOICE_DECODING, MC_CHANCE, label), float("nan")) for p in points
            ]
            ax.plot([p.x for p in points], chance, ":", color=f"C{j}", linewidth=1)
        ax.set(title=f"Multiple choice ({mode} questions)", ylim=(-0.02, 1.02))
        ax.legend(fontsize=8, title="dotted: chance; filled: p < 0.05", title_fontsize=7)
    axes[0].set_ylabel("accuracy")
    return _save(plt, fig, path)


def plot_benchmarks(stages: list[Stage], path: Path) -> bool:
    """Overall accuracy of each benchmark per evaluated checkpoint, chance dotted."""
    rows = [
        (stage.offset + r["step"], r) for stage in stages for r in stage.benchmarks if r["subject"] == OVERALL
    ]
    if not rows:
        return False
    plt = _pyplot()
    fig, (ax,) = _axes(plt, stages)
    for i, label in enumerate(dict.fromkeys(r["label"] for _, r in rows)):
        mine = sorted((x, r) for x, r in rows if r["label"] == label)
        ax.plot([x for x, _ in mine], [r["accuracy"] for _, r in mine], "o-", color=f"C{i}", label=label)
        ax.plot(
            [x for x, _ in mine], [r["chance"] for _, r in mine], ":", color=f"C{i}", label=f"{label}: chance"
        )
    ax.set(title="Benchmarks", ylabel="accuracy", ylim=(-0.02, 1.02))
    ax.legend(fontsize=8)
    return _save(plt, fig, path)


def plot_knowledge(stages: list[Stage], points: list[Point], decodings: list[str], path: Path) -> bool:
    """The registry's ``plot="knowledge"`` metrics (share of answers containing the expected fact):
    one panel per mode (raw / chat), a line per decoding and question group (e.g. people whose Q/A
    was in SFT vs held out)."""
    shown = [(m, _labels(points, m.name)) for m in metrics(plot="knowledge")]
    modes = list(dict.fromkeys(mode for _, labels in shown for mode in labels_by_mode(labels)))
    if not modes:
        return False
    plt = _pyplot()
    fig, axes = _axes(plt, stages, ncols=len(modes), sharey=True)
    styles = ["-", "--", ":", "-."]
    for ax, mode in zip(axes, modes):
        for metric, labels in shown:
            groups = labels_by_mode(labels).get(mode) or [mode]
            named = f"{metric.label} · " if len(shown) > 1 else ""
            for i, decoding in enumerate(decodings):
                for j, label in enumerate(groups):
                    values = [
                        p.summary.get(summary_key(decoding, metric.name, label), float("nan")) for p in points
                    ]
                    ax.plot(
                        [p.x for p in points],
                        values,
                        styles[j % len(styles)],
                        marker="os^v"[i % 4],
                        color=f"C{i}",
                        label=f"{named}{decoding} · {split_group_label(label)[1] or 'all'}",
                    )
        ax.set(title=f"Knowledge ({mode} questions)", ylim=(-0.02, 1.02))
        ax.legend(fontsize=8)
    axes[0].set_ylabel(shown[0][0].description if len(shown) == 1 else "share of answers")
    return _save(plt, fig, path)
