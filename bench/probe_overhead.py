"""What do checkpoint probes cost? Training step time vs one probe, measured side by side in one
process with a recipe's own model, data and probe settings; overhead at several save intervals.

    python bench/probe_overhead.py --config recipes/configs/quickstart/pretrain.yaml \
        --train_files runs/quickstart/world/bios.jsonl --probe_questions runs/quickstart/world/probe_questions.yaml \
        --probe_benchmark cmmlu --probe_benchmark_data ../shared/data/eval/cmmlu --probe_benchmark_limit 10

The probe's parts are timed apart: generated answers, multiple-choice questions scored by
likelihood (those of the questions file) and the benchmark slice (``probe_benchmark``), each the
median of 3. Overhead at save interval K = probe / (K x step + probe), for generation alone and
with each further part; target <= 3% at a realistic interval.
Prints a table and writes probe_overhead.json into --out.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from transformers import Trainer, TrainerCallback, set_seed

from mini_lm.callbacks import TrainingShape, add_recipe_callbacks
from mini_lm.callbacks.probe import benchmark_slice
from mini_lm.config import (
    MiniLMTrainingArguments,
    ModelArguments,
    PretrainDataArguments,
    ProbeArguments,
    parse_config,
)
from mini_lm.data.packing import CausalLMCollator, pad_id
from mini_lm.data.pretrain import build_pretrain_datasets, corpus_texts
from mini_lm.evaluation import evaluate
from mini_lm.models import build_model
from mini_lm.probing import choice_records, decoding_settings, load_questions, probe_model
from mini_lm.tokenization import prepare_tokenizer


class StepTimer(TrainerCallback):
    def __init__(self):
        self.seconds: list[float] = []
        self._began = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        self._began = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.seconds.append(time.perf_counter() - self._began)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--steps", type=int, default=20, help="training steps to time (the first 3 are warm-up)"
    )
    parser.add_argument("--intervals", type=int, nargs="+", default=[50, 150, 500, 1000])
    parser.add_argument("--out", default="runs/bench", help="where probe_overhead.json goes")
    args, recipe_argv = parser.parse_known_args()
    work = tempfile.mkdtemp(prefix="probe_bench_")
    model_args, data_args, train_args, probe_args = parse_config(
        [ModelArguments, PretrainDataArguments, MiniLMTrainingArguments, ProbeArguments],
        [
            *recipe_argv,
            "--output_dir",
            work,
            "--max_steps",
            str(args.steps),
            "--save_strategy",
            "no",
            "--eval_strategy",
            "no",
            "--report_to",
            "none",
            "--disable_tqdm",
            "true",
            "--logging_steps",
            "1000",
        ],
    )
    set_seed(train_args.seed)
    tokenizer = prepare_tokenizer(model_args, work, data_args.tokenizer_vocab_size, corpus_texts(data_args))
    train, _ = build_pretrain_datasets(data_args, tokenizer, seed=train_args.seed)
    model = build_model(model_args, tokenizer)
    timer = StepTimer()
    trainer = Trainer(
        model=model,
        args=train_args,
        train_dataset=train,
        processing_class=tokenizer,
        data_collator=CausalLMCollator(pad_token_id=pad_id(tokenizer)),
        callbacks=[timer],
    )
    add_recipe_callbacks(trainer, shape=TrainingShape(seq_len=data_args.block_size))  # as the recipes
    trainer.train()
    step = statistics.median(timer.seconds[3:] or timer.seconds)

    questions, decodings = load_questions(probe_args.probe_questions), decoding_settings(probe_args)
    generated = [q for q in questions if q.kind == "generation"]
    choices = [q for q in questions if q.kind == "choice"]
    batch = probe_args.probe_batch_size
    parts = {"generation": lambda: probe_model(model, tokenizer, generated, decodings, batch_size=batch)}
    if choices:
        parts["+ multiple choice"] = lambda: choice_records(model, tokenizer, choices, batch)
    sliced = benchmark_slice(probe_args, tokenizer)
    if sliced:
        parts["+ benchmark slice"] = lambda: evaluate(model, tokenizer, sliced[1], sliced[0], batch)
    seconds = {name: _median_seconds(run) for name, run in parts.items()}
    cumulative = dict(zip(seconds, itertools.accumulate(seconds.values())))

    intervals = sorted({*args.intervals, train_args.save_steps}) if train_args.save_steps else args.intervals
    result = {
        "model_parameters": model.num_parameters(),
        "device": str(model.device),
        "threads": torch.get_num_threads(),
        "tokens_per_step": train_args.per_device_train_batch_size * data_args.block_size,
        "step_seconds": step,
        "probe_seconds": cumulative[list(cumulative)[-1]],
        "part_seconds": seconds,
        "questions": len(generated),
        "choice_questions": len(choices),
        "choice_rows": sum(len(q.choices) for q in choices),
        "benchmark": sliced[0].label if sliced else None,
        "benchmark_questions": len(sliced[1]) if sliced else 0,
        "decodings": list(decodings),
        "max_new_tokens": probe_args.probe_max_new_tokens,
        "batch_size": batch,
        "overhead": {name: {k: t / (k * step + t) for k in intervals} for name, t in cumulative.items()},
    }
    print(
        f"step {step * 1000:.0f} ms (median of {len(timer.seconds)}); probe parts (median of 3): "
        f"generation {seconds['generation']:.2f} s ({len(generated)} questions x {len(decodings)} decodings "
        f"x {probe_args.probe_max_new_tokens} tokens, batch {batch})"
        + (
            f", multiple choice {seconds['+ multiple choice']:.2f} s ({len(choices)} questions, "
            f"{result['choice_rows']} prompt+choice rows)"
            if choices
            else ""
        )
        + (
            f", benchmark slice {seconds['+ benchmark slice']:.2f} s ({result['benchmark']}, "
            f"{result['benchmark_questions']} questions)"
            if sliced
            else ""
        )
    )
    print(f"{'save every':>12} | " + " | ".join(f"{name:>18}" for name in cumulative))
    for k in intervals:
        print(f"{k:>12} | " + " | ".join(f"{result['overhead'][name][k]:>18.1%}" for name in cumulative))
    Path(args.out).mkdir(parents=True, exist_ok=True)
    path = Path(args.out) / "probe_overhead.json"
    path.write_text(json.dumps(result, indent=2))
    print(f"-> {path}")


def _median_seconds(run, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        with torch.random.fork_rng(devices=[]):
            run()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


if __name__ == "__main__":
    main()
