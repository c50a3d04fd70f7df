"""A model card (README.md, the Hugging Face convention: YAML front matter, then Markdown) for every
final model a recipe saves, and for a merged LoRA export.

    metrics = run_training(trainer)
    write_model_card(trainer, CardFacts.of("sft", model_args, data.audit.chat.files), metrics)
    write_merged_card("runs/sft_lora", "runs/sft_merged", base="runs/pretrain")   # mini-lm export --merge

What it says: what the model is (architecture, size, stage, recipe), the model it started from, the
data files with their record counts (read and used) and a SHA-256 of their bytes, steps, tokens
seen, the final train / eval loss (and DPO's reward accuracy and margin), the last checkpoint
probe's summary, how to load it with plain transformers, and a licence left for the user to set.
The same facts are machine-readable under ``mini_lm:`` in the front matter (the merged export
reads them back). Built with huggingface_hub's ``ModelCard`` / ``ModelCardData``.

``push_to_hub: true`` stays the Trainer's: it uploads output_dir when the final model is saved, with
the card transformers generates; this card is written right after, into output_dir (upload it with
``hf upload REPO OUTPUT_DIR/README.md README.md``). Nothing here talks to the Hub.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData

from .data.corpus import resolve_corpus_specs
from .probe_metrics import format_summary, summarize
from .probing import ProbeStore
from .records import read_records
from .tokenization import autotokenizer_roundtrip_ok

logger = logging.getLogger(__name__)

CARD = "README.md"
STAGES = {
    "pretraining": "pretrained from scratch on a text corpus (recipes/pretrain.py)",
    "sft": "fine-tuned on chat data with assistant-only loss (recipes/sft.py)",
    "dpo": "preference-tuned with DPO through TRL's DPOTrainer (recipes/dpo.py)",
    "bert-adapter": "a BERT masked LM trained to predict the next token (recipes/mlm.py)",
    "merged": "a LoRA adapter merged into its base model (mini-lm export --merge)",
}
LICENSE_NOTE = (
    "Not set. The licences of the training data (see Data) and of the base model apply; "
    "add a `license:` field to the front matter when you publish this model."
)


@dataclass
class CardFacts:
    """What a recipe knows that the Trainer does not: the stage, the start, the data files.

    ``data``: path (or hub dataset name) -> what its loader counted ({format, records, kept}); files
    without counts are counted here (lines of .txt / .jsonl, items of .json, rows of .parquet)."""

    stage: str
    base_model: str | None
    model_family: str
    data: dict[str, dict] = field(default_factory=dict)
    train_examples: int | None = None  # rows trained on: blocks, conversations (or packed rows), pairs

    @classmethod
    def of(cls, stage: str, model_args, data: dict[str, dict] | list[str], train_dataset=None) -> CardFacts:
        """``data``: a loader's per-file counts, or the train_files specs (files, folders, globs)."""
        if not isinstance(data, dict):
            files, hub = resolve_corpus_specs(list(data))
            data = {p: {} for paths in files.values() for p in paths} | {name: {"hub": True} for name in hub}
        examples = len(train_dataset) if hasattr(train_dataset, "__len__") else None
        return cls(stage, model_args.model_name_or_path, model_args.model_family, dict(data), examples)


# --------------------------------------------------------------------------- facts


def describe_file(path: str, counted: dict) -> dict:
    """{path, format?, records, used?, bytes, sha256} of one data file; hub names have no bytes."""
    out = {"path": str(path)}
    if counted.get("format"):
        out["format"] = counted["format"]
    if counted.get("hub") or not Path(path).is_file():
        return out | {"source": "hub dataset" if counted.get("hub") else "missing when the card was written"}
    out["records"] = counted["records"] if "records" in counted else count_records(Path(path))
    if "kept" in counted:
        out["usable"] = counted["kept"]
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return out | {"bytes": Path(path).stat().st_size, "sha256": digest.hexdigest()}


def count_records(path: Path) -> int:
    """Lines of a .txt / .jsonl file (non-blank), items of a .json list, rows of a .parquet file."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows
    if path.suffix == ".json":
        return sum(1 for _ in read_records(path))
    with open(path, "rb") as f:
        return sum(1 for line in f if line.strip())


def training_facts(trainer, metrics: dict) -> dict:
    """Steps, tokens, final losses (and DPO's reward accuracy / margin) from the Trainer's state."""
    history = trainer.state.log_history
    last = next((h for h in reversed(history) if "loss" in h), {})
    facts = {
        "steps": trainer.state.global_step,
        "tokens_seen": trainer.state.num_input_tokens_seen or None,
        "final_train_loss": last.get("loss"),
        "eval_loss": metrics.get("eval_loss"),
        "eval_perplexity": metrics.get("eval_perplexity"),
    }
    for key in ("rewards/accuracies", "rewards/margins"):
        if key in last:
            facts[key.replace("/", "_")] = last[key]
    for key in ("loss_type", "beta"):
        if hasattr(trainer.args, key):
            facts[key] = getattr(trainer.args, key)
    return {k: v for k, v in facts.items() if v is not None}


def last_probe(run_dir: str | Path) -> dict | None:
    """{step, summary, lines} of the newest probed checkpoint in probes.jsonl, or None."""
    records = ProbeStore(run_dir).records()
    if not records:
        return None
    step = max(r["step"] for r in records)
    rows = [r for r in records if r["step"] == step]
    summary = summarize(rows)
    questions = len({(r["mode"], r["question_id"]) for r in rows})
    return {"step": step, "summary": summary, "lines": format_summary(step, summary, questions)}


# --------------------------------------------------------------------------- the card


def write_model_card(trainer, facts: CardFacts, metrics: dict) -> Path | None:
    """README.md in the trainer's output_dir (rank 0 only); returns its path."""
    if not trainer.is_world_process_zero():
        return None
    out = Path(trainer.args.output_dir)
    model = trainer.accelerator.unwrap_model(trainer.model)
    meta = {
        "stage": facts.stage,
        "base_model": facts.base_model,
        "model_family": facts.model_family,
        "trainer": type(trainer).__name__,
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_examples": facts.train_examples,
        **training_facts(trainer, metrics),
        "data": [describe_file(path, counted) for path, counted in facts.data.items()],
    }
    probe = last_probe(out)
    if probe:
        meta["probe"] = {"step": probe["step"], **probe["summary"]}
    adapter = hasattr(model, "peft_config")
    meta["autotokenizer"] = _autotokenizer_ok(trainer.processing_class, model.config.model_type)
    return save_card(
        out, {k: v for k, v in meta.items() if v is not None}, probe["lines"] if probe else None, adapter
    )


def _autotokenizer_ok(tokenizer, model_type: str) -> bool | None:
    """Does plain AutoTokenizer reproduce this tokenizer from the saved dir? None: cannot tell (a
    model type only mini_lm registers, such as the BERT adapter's)."""
    try:
        return autotokenizer_roundtrip_ok(tokenizer, model_type)
    except (ValueError, KeyError, OSError):
        return None


def write_merged_card(adapter_dir: str | Path, output_dir: str | Path, base: str) -> Path:
    """The merged model's card: the adapter run's facts (from its card), now on top of ``base``."""
    source = Path(adapter_dir) / CARD
    meta = dict(ModelCard.load(source).data.to_dict().get("mini_lm") or {}) if source.is_file() else {}
    if not meta:
        logger.warning("%s has no mini_lm model card: the merged model's card names only its sources", source)
    trained = meta.get("stage")
    meta |= {
        "stage": "merged",
        "adapter": str(adapter_dir),
        "adapter_stage": trained,
        "base_model": str(base),
    }
    probe = meta.get("probe")
    lines = format_summary(probe["step"], probe, 0).splitlines()[1:] if probe else None
    return save_card(Path(output_dir), meta, "\n".join(lines) if lines else None, adapter=False)


def save_card(out: Path, meta: dict, probe_lines: str | None, adapter: bool) -> Path:
    base = meta.get("base_model")
    data = ModelCardData(
        library_name="peft" if adapter else "transformers",
        pipeline_tag="text-generation",
        tags=["mini_lm", meta["stage"], meta.get("model_family") or "causal-lm"],
        # The Hub reads base_model as a repo id: a local path would be an invalid one.
        base_model=base if base and not Path(base).exists() else None,
        mini_lm=meta,
    )
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n{card_body(out, meta, probe_lines, adapter)}")
    path = out / CARD
    card.save(path)
    logger.info("model card: %s", path)
    return path


def card_body(out: Path, meta: dict, probe_lines: str | None, adapter: bool) -> str:
    stage = meta["stage"]
    what = STAGES.get(stage, stage)
    if stage == "merged":
        what += f": the adapter of `{meta['adapter']}` ({meta.get('adapter_stage') or 'unknown stage'})"
    size = f", {meta['parameters'] / 1e6:.1f}M parameters" if meta.get("parameters") else ""
    lines = [
        f"# {out.name}",
        "",
        f"A {meta.get('model_family') or 'causal'} language model{size}, {what}, trained with mini_lm on "
        "the Hugging Face Trainer" + (f" (`{meta['trainer']}`)." if meta.get("trainer") else "."),
        "",
        "## Training",
        "",
        "| | |",
        "|---|---|",
        f"| started from | {_code(meta.get('base_model')) or 'random initialisation'} |",
    ]
    for key, label in (
        ("train_examples", "training rows (after the data checks, drops and mixing; packed rows if packed)"),
        ("steps", "optimizer steps"),
        ("tokens_seen", "tokens seen"),
        ("final_train_loss", "final train loss (last log)"),
        ("eval_loss", "final eval loss"),
        ("eval_perplexity", "final eval perplexity"),
        ("rewards_accuracies", "DPO reward accuracy (last log)"),
        ("rewards_margins", "DPO reward margin (last log)"),
        ("loss_type", "DPO loss"),
        ("beta", "DPO beta"),
    ):
        if meta.get(key) is not None:
            lines.append(f"| {label} | {_value(meta[key])} |")
    lines += ["", *_data_section(meta.get("data") or [])]
    if probe_lines:
        step = (meta.get("probe") or {}).get("step")
        lines += [f"## Last checkpoint probe (step {step})", "", "```", probe_lines, "```", ""]
    lines += [*_load_section(out, meta, adapter), "## License", "", LICENSE_NOTE, ""]
    return "\n".join(lines)


def _data_section(files: list[dict]) -> list[str]:
    if not files:
        return []
    rows = [
        "## Data",
        "",
        "| file | format | records | usable | bytes | sha256 |",
        "|---|---|---|---|---|---|",
    ]
    for f in files:
        cells = [_code(f["path"]), f.get("format", ""), f.get("records", f.get("source", ""))]
        cells += [f.get("usable", ""), f.get("bytes", ""), f"`{f['sha256'][:16]}…`" if "sha256" in f else ""]
        rows.append("| " + " | ".join(_value(c) for c in cells) + " |")
    note = "`usable`: records that passed the reader's checks (the run's audit says what was dropped later)."
    return rows + ["", note, "", "The full SHA-256 of each file is in the front matter (`mini_lm.data`).", ""]


def _load_section(out: Path, meta: dict, adapter: bool) -> list[str]:
    """Loading and one generation, with plain transformers (peft for an adapter): runnable as written."""
    where, chat = str(out), meta.get("stage") in ("sft", "dpo", "merged")
    # mini_lm.tokenization.autotokenizer_roundtrip_ok: AutoTokenizer may swap in another pre-tokenizer
    tokenizer = "PreTrainedTokenizerFast" if meta.get("autotokenizer") is False else "AutoTokenizer"
    model_class = "AutoPeftModelForCausalLM" if adapter else "AutoModelForCausalLM"
    code = [
        *(["from peft import AutoPeftModelForCausalLM"] if adapter else []),
        *(
            ["import mini_lm.models  # registers the bert_next_token model type"]
            if meta.get("model_family") == "bert"
            else []
        ),
        f"from transformers import {'' if adapter else 'AutoModelForCausalLM, '}{tokenizer}",
        f'model = {model_class}.from_pretrained("{where}")',
        f'tokenizer = {tokenizer}.from_pretrained("{where}")',
    ]
    if chat:
        code += [
            'messages = [{"role": "user", "content": "你好"}]',
            "inputs = tokenizer.apply_chat_template(",
            '    messages, add_generation_prompt=True, return_tensors="pt", return_dict=True',
            ")",
        ]
    else:
        code.append('inputs = tokenizer("你好", return_tensors="pt")')
    code += [
        'new = model.generate(**inputs, max_new_tokens=60)[0, inputs["input_ids"].shape[1] :]',
        "print(tokenizer.decode(new, skip_special_tokens=True))",
    ]
    note = "A plain transformers checkpoint."
    if adapter:
        note = f"A LoRA adapter (peft); `mini-lm export {where} --merge --output DIR` writes a plain model."
    elif meta.get("model_family") == "bert":
        note = (
            "The BERT next-token adapter: importing mini_lm registers its model type with the Auto classes."
        )
    if tokenizer != "AutoTokenizer":
        note += (
            f" Load the tokenizer with `{tokenizer}`: `AutoTokenizer` would swap in the "
            f"{meta.get('model_family')} tokenizer class, whose pre-tokenizer gives other ids."
        )
    cli = f"mini-lm chat {where}" if chat else f"mini-lm generate {where} --prompt 你好"
    return ["## How to load", "", note, "", "```python", *code, "```", "", f"Or: `{cli}`.", ""]


def _code(value) -> str:
    return f"`{value}`" if value else ""


def _value(value) -> str:
    if isinstance(value, list):
        return ", ".join(map(str, value))
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value).replace("|", "\\|")
