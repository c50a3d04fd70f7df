"""Training throughput: the mini_lm path vs a naive HF Trainer baseline, side by side in one run.

    python bench/train_throughput.py                      # CPU: tiny models; read the RATIOS only
    python bench/train_throughput.py --mode gpu           # one GPU: Qwen2.5-0.5B shape @ 2048, GPT-2 124M @ 1024
    python bench/train_throughput.py --mode gpu --shapes gpt2-124m --steps 50 --out runs/bench_gpu.json

mini_lm: documents packed into full ``seq_len`` blocks (pack_dataset, no padding), FlashAttention-2
when flash_attn and CUDA are present (else SDPA), bf16 on GPU, MiniLMTrainer: what
recipes/pretrain.py trains with. naive: the stock HF way without those: one document per row
(truncated to seq_len), DataCollatorForLanguageModeling padding to the batch's longest row, eager
attention, plain Trainer, same precision and batch. Two ablations (packed+eager, padded+fast-attn)
show which part buys what. tokens/s counts real tokens only (attention_mask), so padding is the
baseline's cost, not its gain. Variants run interleaved (A B C D A B C D ...) and each figure is
the median over --repeats. On CPU the ratios are taken on tokens per CPU-second of a 1-thread
process, which other jobs on a shared machine barely move (wall-clock tokens/s is shown too).
Prints a table, writes JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers
from transformers import DataCollatorForLanguageModeling, Trainer, TrainerCallback, set_seed
from transformers.trainer_callback import PrinterCallback

from mini_lm.config import MiniLMTrainingArguments, ModelArguments, PretrainDataArguments, load_yaml_config
from mini_lm.data.corpus import load_corpus
from mini_lm.data.packing import CausalLMCollator, pack_dataset, pad_id, tokenize_dataset
from mini_lm.models import build_model, choose_attn_implementation
from mini_lm.throughput import device_peak_tflops, mfu, model_flops_per_token
from mini_lm.tokenization import document_separator_id, load_tokenizer, train_bpe_tokenizer
from mini_lm.training import MiniLMTrainer

REPO = Path(__file__).resolve().parents[1]
QWEN_RECIPE = REPO / "recipes/configs/qwen2/pretrain_qwen2.5_0.5b.yaml"


@dataclass
class Shape:
    """A model + data setting to measure."""

    name: str
    model: ModelArguments
    tokenizer: str | int  # folder under the data dir, or a vocab size: a BPE trained on the corpus
    corpus: list[str]  # paths under the data dir
    seq_len: int
    batch_size: int
    sample_by: str = "line"
    max_documents: int = 4000


@dataclass
class Variant:
    """One way of training the same shape: packed or padded rows, which attention, which trainer."""

    name: str
    packed: bool
    attention: str  # "auto" = FA2 when available, else SDPA
    mini_lm_trainer: bool = False


VARIANTS = [
    Variant("mini_lm", packed=True, attention="auto", mini_lm_trainer=True),
    Variant("naive", packed=False, attention="eager"),
    Variant("packed+eager", packed=True, attention="eager"),
    Variant("padded+fast-attn", packed=False, attention="auto"),
]


def cpu_shapes() -> list[Shape]:
    """Tiny stand-ins for the two GPU shapes: same families and kinds of corpus, small vocabularies (as in
    the tiny recipes) so the LM head does not drown the transformer blocks."""
    return [
        Shape(
            "qwen2-tiny",
            ModelArguments(
                model_family="qwen2",
                hidden_size=128,
                num_hidden_layers=4,
                num_attention_heads=4,
                num_key_value_heads=2,
                intermediate_size=384,
                max_position_embeddings=256,
            ),
            "tokenizers/minimind",
            ["corpus/zh/hongloumeng.txt"],
            seq_len=256,
            batch_size=8,
            max_documents=1000,
        ),
        Shape(
            "gpt2-tiny",
            ModelArguments(
                model_family="gpt2",
                hidden_size=128,
                num_hidden_layers=4,
                num_attention_heads=4,
                max_position_embeddings=256,
            ),
            2000,
            ["corpus/en/c4_demo.jsonl"],
            seq_len=256,
            batch_size=8,
            max_documents=300,
        ),
    ]


def gpu_shapes() -> list[Shape]:
    """Qwen2.5-0.5B as recipes/configs/qwen2/pretrain_qwen2.5_0.5b.yaml builds it; GPT-2 124M (nanoGPT's)."""
    known = {
        f.name
        for dt in (ModelArguments, PretrainDataArguments, MiniLMTrainingArguments)
        for f in dataclasses.fields(dt)
    }
    values = load_yaml_config(QWEN_RECIPE, known)
    size_fields = {f.name for f in dataclasses.fields(ModelArguments)} - {"tokenizer_name_or_path"}
    qwen = ModelArguments(**{k: v for k, v in values.items() if k in size_fields})
    gpt2 = ModelArguments(
        model_family="gpt2",
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        max_position_embeddings=1024,
    )
    return [
        Shape(
            "qwen2.5-0.5b",
            qwen,
            "tokenizers/qwen2.5",
            ["corpus/zh"],
            seq_len=values["block_size"],
            batch_size=4,
        ),
        Shape(
            "gpt2-124m",
            gpt2,
            "tokenizers/gpt2",
            ["corpus/en/c4_demo.jsonl", "corpus/en/wiki_demo.txt"],
            seq_len=1024,
            batch_size=8,
        ),
    ]


def load_documents(shape: Shape, data_dir: Path):
    docs = load_corpus([str(data_dir / c) for c in shape.corpus], sample_by=shape.sample_by)
    return docs.select(range(min(len(docs), shape.max_documents)))


def prepare_tokenizer(shape: Shape, docs, data_dir: Path, work_dir: str):
    if isinstance(shape.tokenizer, int):
        tokenizer = train_bpe_tokenizer(docs["text"], shape.tokenizer, Path(work_dir) / shape.name)
    else:
        tokenizer = load_tokenizer(data_dir / shape.tokenizer)
    if tokenizer.pad_token is None:  # GPT-2: the naive collator pads with eos, as HF examples do
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def build_datasets(shape: Shape, docs, tokenizer) -> dict:
    """The same documents twice: packed into seq_len blocks, and one (truncated) document per row."""
    tokenized = tokenize_dataset(docs, tokenizer, document_separator_id(tokenizer))
    lengths = [len(ids) for ids in tokenized["input_ids"]]
    rows = tokenized.map(
        lambda b: {"input_ids": [ids[: shape.seq_len] for ids in b["input_ids"]]}, batched=True
    )
    return {
        "packed": pack_dataset(tokenized, shape.seq_len),
        "padded": rows,
        "documents": len(docs),
        "mean_document_tokens": round(sum(lengths) / len(lengths), 1),
    }


class CountingCollator:
    """Wraps a collator; counts the positions it emits and how many are padding."""

    def __init__(self, inner):
        self.inner, self.positions, self.real = inner, 0, 0

    def __call__(self, features):
        batch = self.inner(features)
        self.positions += batch["input_ids"].numel()
        self.real += int(batch["attention_mask"].sum())
        return batch


class StepTimer(TrainerCallback):
    """Wall time, this process's CPU time and real tokens at the end of warm-up and of the last step."""

    def __init__(self, warmup: int):
        self.warmup, self.start, self.end = warmup, None, None

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step in (self.warmup, state.max_steps):
            if torch.cuda.is_available():
                torch.cuda.synchronize()  # time finished kernels, not queued ones
            mark = (time.perf_counter(), time.process_time(), state.num_input_tokens_seen)
            self.start, self.end = (
                (mark, self.end) if state.global_step == self.warmup else (self.start, mark)
            )


def checkpointing_field() -> str:
    """TrainingArguments' name for activation checkpointing: activation_checkpointing from transformers
    5.23 (the old name a deprecated alias), gradient_checkpointing before (5.17 on the GPU machine)."""
    fields = MiniLMTrainingArguments.__dataclass_fields__
    return "activation_checkpointing" if "activation_checkpointing" in fields else "gradient_checkpointing"


def measure(shape: Shape, variant: Variant, tokenizer, data: dict, opts) -> dict:
    """Train ``opts.warmup + opts.steps`` steps of one variant; tokens/s over the steps after warm-up."""
    set_seed(0)
    model = build_model(dataclasses.replace(shape.model, attn_implementation=variant.attention), tokenizer)
    flops_per_token = model_flops_per_token(model, shape.seq_len)
    collator = CountingCollator(
        CausalLMCollator(pad_id(tokenizer))
        if variant.packed
        else DataCollatorForLanguageModeling(tokenizer, mlm=False)
    )
    timer = StepTimer(opts.warmup)
    with tempfile.TemporaryDirectory() as tmp:
        args = MiniLMTrainingArguments(
            output_dir=tmp,
            per_device_train_batch_size=shape.batch_size,
            max_steps=opts.warmup + opts.steps,
            learning_rate=1e-4,
            bf16=opts.mode == "gpu",
            report_to="none",
            save_strategy="no",
            logging_strategy="no",
            disable_tqdm=True,
            dataloader_num_workers=0,
            seed=0,
            **{checkpointing_field(): opts.activation_checkpointing},
        )
        kwargs = {"seq_len": shape.seq_len} if variant.mini_lm_trainer else {}
        trainer = (MiniLMTrainer if variant.mini_lm_trainer else Trainer)(
            model=model,
            args=args,
            train_dataset=data["packed" if variant.packed else "padded"],
            data_collator=collator,
            processing_class=tokenizer,
            callbacks=[timer],
            **kwargs,
        )
        trainer.remove_callback(PrinterCallback)  # keep stdout for the table
        result = {
            "shape": shape.name,
            "variant": variant.name,
            "packed": variant.packed,
            "attention": model.config._attn_implementation,
            "precision": "bf16" if args.bf16 else "fp32",
        }
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        try:
            trainer.train()
        except torch.cuda.OutOfMemoryError:
            return {**result, "status": "out of memory"}
        finally:
            del trainer, model
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    (wall0, cpu0, n0), (wall1, cpu1, n1) = timer.start, timer.end
    tps = (n1 - n0) / (wall1 - wall0)
    peak = device_peak_tflops()
    on_gpu = torch.cuda.is_available()
    return {
        **result,
        "status": "ok",
        "tokens_per_second": tps,
        # On a shared CPU box wall time swings with other jobs; CPU time of a 1-thread process does not.
        "tokens_per_cpu_second": None if on_gpu else (n1 - n0) / (cpu1 - cpu0),
        "mfu": mfu(tps, flops_per_token, peak) if peak else None,
        "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if on_gpu else None,
        "padding_fraction": 1 - collator.real / collator.positions,
    }


def summarize(runs: list[dict], speed: str = "tokens_per_second") -> list[dict]:
    """Median over repeats per (shape, variant), and the ratio of its ``speed`` to the naive baseline's."""
    rows = []
    for key in dict.fromkeys((r["shape"], r["variant"]) for r in runs):
        same = [r for r in runs if (r["shape"], r["variant"]) == key]
        ok = [r for r in same if r["status"] == "ok"]
        row = {
            k: v for k, v in same[0].items() if k in ("shape", "variant", "packed", "attention", "precision")
        }
        row["status"] = "ok" if ok else same[0]["status"]
        for metric in (
            "tokens_per_second",
            "tokens_per_cpu_second",
            "mfu",
            "peak_memory_gib",
            "padding_fraction",
        ):
            values = [r[metric] for r in ok if r.get(metric) is not None]
            row[metric] = statistics.median(values) if values else None
        row[f"{speed}_repeats"] = [round(r[speed], 1) for r in ok]
        rows.append(row)
    for row in rows:
        naive = next(r for r in rows if r["shape"] == row["shape"] and r["variant"] == "naive")
        both = row[speed] and naive[speed]
        row["vs_naive"] = row[speed] / naive[speed] if both else None
    return rows


def format_table(rows: list[dict]) -> str:
    def num(value, fmt):
        return "-" if value is None else format(value, fmt)

    lines = [
        "| shape | variant | attention | precision | tokens/s | tokens/CPU-s | x naive | MFU | peak GiB | padding |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        speed = num(r["tokens_per_second"], ",.0f") if r["status"] == "ok" else r["status"]
        lines.append(
            f"| {r['shape']} | {r['variant']} | {r['attention']} | {r['precision']} | {speed} | "
            f"{num(r['tokens_per_cpu_second'], ',.0f')} | {num(r['vs_naive'], '.2f')} | {num(r['mfu'], '.1%')} | "
            f"{num(r['peak_memory_gib'], '.1f')} | {num(r['padding_fraction'], '.0%')} |"
        )
    return "\n".join(lines)


def environment(opts) -> dict:
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    return {
        "mode": opts.mode,
        "device": gpu or f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)",
        "peak_tflops": device_peak_tflops(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "fast_attention": choose_attn_implementation("auto"),
        "steps": opts.steps,
        "warmup": opts.warmup,
        "repeats": opts.repeats,
        "activation_checkpointing": opts.activation_checkpointing,
        "cpu_threads": torch.get_num_threads() if opts.mode == "cpu" else None,
    }


def select(items: list, names: str | None, what: str) -> list:
    """Items whose .name is in the comma-separated names (all when None); unknown names fail."""
    if not names:
        return items
    wanted, known = names.split(","), [i.name for i in items]
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise SystemExit(f"unknown {what}(s) {', '.join(unknown)}; choose from {', '.join(known)}")
    return [i for i in items if i.name in wanted]


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=["cpu", "gpu"], default="cpu")
    parser.add_argument(
        "--shapes", default=None, help="Comma-separated shape names (default: all of the mode)."
    )
    parser.add_argument("--variants", default=",".join(v.name for v in VARIANTS))
    parser.add_argument("--steps", type=int, default=None, help="Timed steps (default: cpu 8, gpu 30).")
    parser.add_argument(
        "--warmup", type=int, default=None, help="Untimed first steps (default: cpu 2, gpu 5)."
    )
    parser.add_argument(
        "--repeats", type=int, default=None, help="Interleaved rounds (default: cpu 3, gpu 2)."
    )
    parser.add_argument("--batch-size", type=int, default=None, help="Per-device batch for every shape.")
    parser.add_argument(
        "--activation-checkpointing",
        action="store_true",
        help="Recompute activations in backward (gradient checkpointing): less memory, ~30%% more compute.",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="CPU mode: torch threads. 1 makes CPU time a stable measure on a shared machine.",
    )
    parser.add_argument(
        "--data-dir", default=os.environ.get("MINI_LM_DATA", str(REPO.parent / "shared/data"))
    )
    parser.add_argument("--out", default="runs/bench/train_throughput.json")
    return parser


def bench_shape(shape: Shape, variants: list[Variant], opts, work_dir: str) -> tuple[list[dict], dict]:
    """All rounds of all variants on one shape, interleaved; (runs, what the data was)."""
    if opts.batch_size:
        shape.batch_size = opts.batch_size
    docs = load_documents(shape, Path(opts.data_dir))
    tokenizer = prepare_tokenizer(shape, docs, Path(opts.data_dir), work_dir)
    data = build_datasets(shape, docs, tokenizer)
    info = {
        "corpus": shape.corpus,
        "tokenizer": shape.tokenizer,
        "vocab": len(tokenizer),
        "seq_len": shape.seq_len,
        "batch_size": shape.batch_size,
        "documents": data["documents"],
        "mean_document_tokens": data["mean_document_tokens"],
    }
    runs = []
    for round_ in range(opts.repeats):
        for variant in variants:
            runs.append(measure(shape, variant, tokenizer, data, opts))
            print(
                f"round {round_ + 1}/{opts.repeats} {shape.name:>14} {variant.name:>17}: "
                f"{runs[-1].get('tokens_per_second', 0):,.0f} tokens/s",
                file=sys.stderr,
            )
    return runs, info


def main(argv: list[str] | None = None) -> list[dict]:
    opts = make_parser().parse_args(argv)
    if opts.mode == "gpu" and not torch.cuda.is_available():
        raise SystemExit("--mode gpu needs a CUDA GPU and none is visible (CPU ratios: --mode cpu)")
    defaults = {"cpu": (8, 2, 3), "gpu": (30, 5, 2)}[opts.mode]
    opts.steps, opts.warmup, opts.repeats = (
        given or default for given, default in zip((opts.steps, opts.warmup, opts.repeats), defaults)
    )
    shapes = select(cpu_shapes() if opts.mode == "cpu" else gpu_shapes(), opts.shapes, "shape")
    variants = select(VARIANTS, opts.variants, "variant")
    if "naive" not in [v.name for v in variants]:
        raise SystemExit("--variants must include naive (the baseline the ratios are taken against)")
    runs, data_info, threads = [], {}, torch.get_num_threads()
    try:
        if opts.mode == "cpu":
            torch.set_num_threads(opts.threads)
        env = environment(opts)
        with tempfile.TemporaryDirectory(prefix="train_throughput_") as work_dir:
            for shape in shapes:
                shape_runs, data_info[shape.name] = bench_shape(shape, variants, opts, work_dir)
                runs += shape_runs
    finally:
        torch.set_num_threads(threads)  # main() is also called in-process (tests)
    speed = "tokens_per_cpu_second" if opts.mode == "cpu" else "tokens_per_second"
    rows = summarize(runs, speed)
    print(format_table(rows))
    print(f"x naive: ratio of the medians of {speed}")
    report = {"environment": env, "data": data_info, "results": rows, "runs": runs}
    Path(opts.out).parent.mkdir(parents=True, exist_ok=True)
    Path(opts.out).write_text(json.dumps(report, indent=2), encoding="utf-8")
    print(f"wrote {opts.out}")
    return rows


if __name__ == "__main__":
    main()
