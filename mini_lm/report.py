"""``mini-lm report RUN_DIR``: how a run matured, as Markdown with PNG plots.

    report = write_report("runs/quickstart/pretrain")   # -> runs/quickstart/pretrain/report/report.md

The layout follows seed 000: a timeline of answers per checkpoint headed by its train/eval loss,
preceded by a table of the per-checkpoint metrics and three plots (loss, repetition, knowledge).
Everything comes from files a run leaves behind: probes.jsonl (or checkpoint-*/probe.jsonl) and
trainer_state.json, so a report can be made while a run is still going.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path

from .probing import CHECKPOINT_FILE, ProbeStore, read_records, record_key, summarize


def load_log_history(run_dir: Path) -> list[dict]:
    """trainer_state.json's log history: the run's own, else the newest checkpoint's."""
    candidates = [run_dir / "trainer_state.json"] + [c / "trainer_state.json" for c in reversed(checkpoints(run_dir))]
    for path in candidates:
        if path.is_file():
            return json.loads(path.read_text(encoding="utf-8")).get("log_history", [])
    return []


def checkpoints(run_dir: Path) -> list[Path]:
    """checkpoint-N dirs sorted by N."""
    found = [p for p in run_dir.glob("checkpoint-*") if p.is_dir() and re.fullmatch(r"checkpoint-\d+", p.name)]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def load_probe_records(run_dir: Path) -> list[dict]:
    """probes.jsonl, plus any checkpoint-*/probe.jsonl it lacks (e.g. copied from another machine)."""
    latest = {record_key(r): r for r in ProbeStore(run_dir).records()}
    for checkpoint in checkpoints(run_dir):
        for record in read_records(checkpoint / CHECKPOINT_FILE):
            latest.setdefault(record_key(record), record)
    return sorted(latest.values(), key=lambda r: r["step"])


def write_report(run_dir: str | Path, out_dir: str | Path | None = None) -> Path:
    """Write report.md and loss.png / repetition.png / knowledge.png; return the report path."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run dir not found: {run_dir}")
    records = load_probe_records(run_dir)
    history = load_log_history(run_dir)
    if not records and not history:
        raise ValueError(f"{run_dir}: no probes.jsonl, checkpoint-*/probe.jsonl or trainer_state.json to report on")
    out = Path(out_dir) if out_dir else run_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    steps = sorted({r["step"] for r in records})
    summaries = {step: summarize([r for r in records if r["step"] == step]) for step in steps}
    decodings = list(dict.fromkeys(r["decoding"] for r in records))
    plots = [name for name, made in (
        ("loss.png", plot_loss(history, steps, out / "loss.png")),
        ("repetition.png", plot_repetition(summaries, decodings, out / "repetition.png")),
        ("knowledge.png", plot_knowledge(summaries, decodings, out / "knowledge.png")),
    ) if made]
    text = render_markdown(run_dir, records, summaries, decodings, history, plots)
    path = out / "report.md"
    path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- markdown

def render_markdown(run_dir: Path, records: list[dict], summaries: dict[int, dict], decodings: list[str],
                    history: list[dict], plots: list[str]) -> str:
    lines = [f"# Run report: `{run_dir}`", "", f"Generated {datetime.now():%Y-%m-%d %H:%M} by `mini-lm report`.", ""]
    lines += _run_facts(run_dir, history, records)
    if plots:
        lines += ["## Plots", ""] + [f"![{Path(p).stem}]({p})" for p in plots] + [""]
    if summaries:
        lines += ["## Maturity per checkpoint", "", *_metrics_table(summaries, decodings, records), ""]
        lines += ["## Answers per checkpoint", "",
                  "Each line: `[question] → answer`; ✓ / ✗ when an expected answer is known, "
                  "🔁 when the answer is repetitive, ✂ when it hit max_new_tokens without stopping.", ""]
        for step in summaries:
            lines += _timeline_entry(step, [r for r in records if r["step"] == step], decodings)
    else:
        lines += ["No probe results yet (they are written at each checkpoint save).", ""]
    return "\n".join(lines)


def _run_facts(run_dir: Path, history: list[dict], records: list[dict]) -> list[str]:
    facts = []
    info_path = run_dir / "run_info.json"
    if info_path.is_file():
        info = json.loads(info_path.read_text(encoding="utf-8"))
        facts.append(f"world size {info.get('world_size')}, {info.get('precision')}, "
                     f"{info.get('tokens_per_step') or '?'} tokens/step, global batch {info.get('global_batch_size')}")
    losses = [h for h in history if "loss" in h]
    if losses:
        facts.append(f"train loss {losses[0]['loss']:.3f} (step {losses[0]['step']}) → "
                     f"{losses[-1]['loss']:.3f} (step {losses[-1]['step']})")
    seen: dict[str, dict] = {}
    for r in records:
        seen.setdefault(r["decoding"], r["settings"])
    for name, settings in seen.items():
        shown = {k: v for k, v in settings.items() if v is not None and not (name == "greedy" and k in
                 ("temperature", "top_k", "top_p"))}
        facts.append(f"decoding `{name}`: " + ", ".join(f"{k}={v}" for k, v in shown.items()))
    return [f"- {f}" for f in facts] + [""] if facts else []


_COLUMNS = [("distinct_2", "distinct-2", "{:.2f}"), ("repeated_4gram_rate", "rep. 4-gram", "{:.2f}"),
            ("repetitive", "repetitive", "{:.0%}"), ("eos", "EOS", "{:.0%}"),
            ("hit_max_new_tokens", "hit max", "{:.0%}"), ("length_tokens", "tokens", "{:.0f}"),
            ("knowledge_contains", "knowledge", "{:.0%}")]


def _metrics_table(summaries: dict[int, dict], decodings: list[str], records: list[dict]) -> list[str]:
    groups = sorted({r["group"] for r in records if r.get("group") and r.get("knowledge_contains") is not None})
    header = ["step", "train loss", "eval loss", "decoding"] + [c[1] for c in _COLUMNS] + [f"knowledge {g}" for g in groups]
    rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for step, summary in summaries.items():
        first = next(r for r in records if r["step"] == step)
        for decoding in decodings:
            def cell(key, fmt, d=decoding, s=summary):
                value = s.get(f"probe/{d}/{key}")
                return "" if value is None else fmt.format(value)

            cells = [str(step), _num(first.get("train_loss")), _num(first.get("eval_loss")), decoding]
            cells += [cell(key, fmt) for key, _, fmt in _COLUMNS]
            cells += [cell(f"knowledge_contains/{g}", "{:.0%}") for g in groups]
            rows.append("| " + " | ".join(cells) + " |")
    return rows


def _timeline_entry(step: int, records: list[dict], decodings: list[str]) -> list[str]:
    first = records[0]
    head = f"### Step {step} | Loss: {_num(first.get('train_loss'))}"
    if first.get("eval_loss") is not None:
        head += f" | Eval loss: {_num(first['eval_loss'])}"
    lines = [head, ""]
    for decoding in decodings:
        rows = [r for r in records if r["decoding"] == decoding]
        if not rows:
            continue
        lines += [f"**{decoding}**", "```"]
        for r in rows:
            marks = ({1.0: " ✓", 0.0: " ✗"}.get(r.get("knowledge_contains"), "") + (" 🔁" if r.get("repetitive") else "")
                     + (" ✂" if r.get("hit_max_new_tokens") else ""))
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


def plot_loss(history: list[dict], probe_steps: list[int], path: Path) -> bool:
    train = [(h["step"], h["loss"]) for h in history if "loss" in h]
    evals = [(h["step"], h["eval_loss"]) for h in history if "eval_loss" in h]
    if not train and not evals:
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    if train:
        ax.plot(*zip(*train), label="train loss", color="tab:blue")
    if evals:
        ax.plot(*zip(*evals), "o-", label="eval loss", color="tab:orange")
    for i, step in enumerate(probe_steps):
        ax.axvline(step, color="grey", linestyle=":", linewidth=1, label="probed checkpoint" if i == 0 else None)
    ax.set(xlabel="step", ylabel="loss", title="Loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


_REPETITION = [("distinct_2", "distinct-2"), ("repeated_4gram_rate", "repeated 4-gram rate"),
               ("repetitive", "share repetitive"), ("hit_max_new_tokens", "share hitting max_new_tokens")]


def plot_repetition(summaries: dict[int, dict], decodings: list[str], path: Path) -> bool:
    if not summaries:
        return False
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(decodings), figsize=(6 * len(decodings), 4.5), squeeze=False, sharey=True)
    steps = list(summaries)
    for ax, decoding in zip(axes[0], decodings):
        for key, label in _REPETITION:
            values = [summaries[s].get(f"probe/{decoding}/{key}") for s in steps]
            ax.plot(steps, [float("nan") if v is None else v for v in values], "o-", label=label)
        ax.set(xlabel="step", title=f"Repetition ({decoding})", ylim=(-0.02, 1.02))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("rate")
    axes[0][-1].legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_knowledge(summaries: dict[int, dict], decodings: list[str], path: Path) -> bool:
    """Knowledge score (expected answer contained) per decoding, overall and per question group."""
    series: dict[str, list[float]] = {}
    steps = list(summaries)
    for decoding in decodings:
        prefix = f"probe/{decoding}/knowledge_contains"
        keys = sorted({k for s in summaries.values() for k in s if k == prefix or k.startswith(prefix + "/")})
        for key in keys:
            label = decoding + (f" / {key.rsplit('/', 1)[1]}" if key != prefix else " / all")
            series[label] = [summaries[s].get(key, float("nan")) for s in steps]
    if not series:
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for label, values in series.items():
        ax.plot(steps, values, "o-" if label.endswith("/ all") else "s--", label=label)
    ax.set(xlabel="step", ylabel="share of answers containing the expected fact", title="Knowledge", ylim=(-0.02, 1.02))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
