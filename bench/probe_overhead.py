"""What do checkpoint probes cost? Training step time vs one probe, measured side by side in one
process with a recipe's own model, data and probe settings; overhead at several save intervals.

    python bench/probe_overhead.py --config recipes/configs/quickstart/pretrain.yaml \
        --train_files runs/quickstart/world/bios.jsonl --probe_questions runs/quickstart/world/probe_questions.yaml

Overhead at save interval K = probe / (K x step + probe); target <= 3% at a realistic interval.
Prints a table and writes probe_overhead.json into --out.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from transformers import TrainerCallback, set_seed

from mini_lm.config import (
    MiniLMTrainingArguments,
    ModelArguments,
    PretrainDataArguments,
    ProbeArguments,
    parse_config,
)
from mini_lm.data.packing import CausalLMCollator, pad_id
from mini_lm.data.pretrain import build_pretrain_datasets, corpus_texts
from mini_lm.models import build_model
from mini_lm.probing import decoding_settings, load_questions, probe_model
from mini_lm.tokenization import prepare_tokenizer
from mini_lm.training import MiniLMTrainer


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
    trainer = MiniLMTrainer(
        model=model,
        args=train_args,
        train_dataset=train,
        processing_class=tokenizer,
        data_collator=CausalLMCollator(pad_token_id=pad_id(tokenizer)),
        callbacks=[timer],
    )
    trainer.train()
    step = statistics.median(timer.seconds[3:] or timer.seconds)

    questions, decodings = load_questions(probe_args.probe_questions), decoding_settings(probe_args)
    probes = []
    for _ in range(3):
        began = time.perf_counter()
        with torch.random.fork_rng(devices=[]):
            probe_model(model, tokenizer, questions, decodings, batch_size=probe_args.probe_batch_size)
        probes.append(time.perf_counter() - began)
    probe = statistics.median(probes)

    intervals = sorted({*args.intervals, train_args.save_steps}) if train_args.save_steps else args.intervals
    result = {
        "model_parameters": model.num_parameters(),
        "device": str(model.device),
        "threads": torch.get_num_threads(),
        "tokens_per_step": train_args.per_device_train_batch_size * data_args.block_size,
        "step_seconds": step,
        "probe_seconds": probe,
        "questions": len(questions),
        "decodings": list(decodings),
        "max_new_tokens": probe_args.probe_max_new_tokens,
        "batch_size": probe_args.probe_batch_size,
        "overhead": {k: probe / (k * step + probe) for k in intervals},
    }
    print(
        f"step {step * 1000:.0f} ms (median of {len(timer.seconds)}), probe {probe:.2f} s "
        f"({len(questions)} questions x {len(decodings)} decodings x {probe_args.probe_max_new_tokens} tokens, "
        f"batch {probe_args.probe_batch_size})"
    )
    print(f"{'save every':>12} | {'probe overhead':>14}")
    for k, v in result["overhead"].items():
        print(f"{k:>12} | {v:>13.1%}")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    path = Path(args.out) / "probe_overhead.json"
    path.write_text(json.dumps(result, indent=2))
    print(f"-> {path}")


if __name__ == "__main__":
    main()
