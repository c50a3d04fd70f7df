"""``mini-lm report RUN_DIR [RUN_DIR ...]``: how a run matured, as Markdown with PNG plots.

    write_report(["runs/quickstart/pretrain", "runs/quickstart/sft"], "runs/quickstart/report")

The layout follows seed 000: a timeline of answers per checkpoint headed by its train/eval loss,
preceded by a table of per-checkpoint metrics and three plots (loss, repetition, knowledge).
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

from .probe_metrics import labels_by_mode, metrics, split_group_label, summarize, summary_key, summary_labels
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
        if not records and not history:
            raise ValueError(
                f"{run_dir}: no probes.jsonl, checkpoint-*/probe.jsonl or trainer_state.json to report on"
            )
        offset = stages[-1].offset + stages[-1].last_step if stages else 0
        stages.append(
            Stage(run_dir.name, run_dir, offset, history, records, sorted({r["step"] for r in records}))
        )
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
    plots = [
        name
        for name, made in (
            ("loss.png", plot_loss(stages, out / "loss.png")),
            ("repetition.png", plot_repetition(stages, points, decodings, out / "repetition.png")),
            ("knowledge.png", plot_knowledge(stages, points, decodings, out / "knowledge.png")),
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
    for stage in stages:
        lines += _stage_facts(stage, len(stages) > 1)
    if plots:
        lines += ["## Plots", ""] + [f"![{Path(p).stem}]({p})" for p in plots] + [""]
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
    for point in points:
        lines += _timeline_entry(point, decodings, len(stages) > 1)
    return "\n".join(lines)


def _stage_facts(stage: Stage, named: bool) -> list[str]:
    facts = []
    info_path = stage.run_dir / "run_info.json"
    if info_path.is_file():
        info = json.loads(info_path.read_text(encoding="utf-8"))
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
    seen: dict[str, dict] = {}
    for r in stage.records:
        seen.setdefault(r["decoding"], r["settings"])
    for name, settings in seen.items():
        sampling_only = ("temperature", "top_k", "top_p") if not settings.get("do_sample") else ()
        shown = {k: v for k, v in settings.items() if v is not None and k not in sampling_only}
        facts.append(f"decoding `{name}`: " + ", ".join(f"{k}={v}" for k, v in shown.items()))
    head = [f"**{stage.name}** (`{stage.run_dir}`)", ""] if named else []
    return head + [f"- {f}" for f in facts] + [""]


def _metrics_table(points: list[Point], decodings: list[str], named: bool) -> list[str]:
    """One row per checkpoint and decoding: the registry's ``table`` metrics, then its ``by_group``
    table metrics per question group ("knowledge raw/heldout"); "n/a" where nothing was scored."""
    columns = metrics(table=True)
    grouped = [(m, label) for m in columns if m.by_group for label in _labels(points, m.name)]
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
                {1.0: " ✓", 0.0: " ✗"}.get(r.get("knowledge_contains"), "")
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
        if train:
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
