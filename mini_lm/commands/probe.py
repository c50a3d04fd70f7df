"""mini-lm probe RUN_DIR [--questions FILE]: probe every checkpoint-* of a run, e.g. with new questions.

Defaults are what the run probed with during training (RUN_DIR/probe_config.json), else the
built-in questions and ProbeArguments' defaults; every ProbeArguments field is a flag here
(--max-new-tokens, --decoding greedy sampled, --temperature, ...).
"""

from __future__ import annotations

import argparse
import dataclasses
import typing

from ..config import ProbeArguments


def _flag(name: str) -> str:
    return "--" + name.removeprefix("probe_").replace("_", "-")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="a recipe's output_dir holding checkpoint-N dirs")
    parser.add_argument("--steps", type=int, nargs="+", help="only these checkpoint steps (default: all)")
    parser.add_argument("--device", help="cpu | cuda | cuda:1 ... (default: cuda when available)")
    hints = typing.get_type_hints(ProbeArguments)
    for f in dataclasses.fields(ProbeArguments):
        if f.name in ("probe", "probe_wait_minutes"):
            continue
        kind = hints[f.name]
        extra = {"nargs": "+"} if typing.get_origin(kind) is list else {"type": _scalar_type(kind)}
        # default None: "not given", so the run's own probe settings stay in force
        parser.add_argument(
            _flag(f.name),
            dest=f.name,
            default=None,
            metavar=f.name.removeprefix("probe_").upper(),
            help=f.metadata.get("help"),
            **extra,
        )


def _scalar_type(kind):
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    return args[0] if args else kind


def run(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    import torch

    from ..generation import load_for_generation
    from ..probe_metrics import format_summary, summarize
    from ..probing import (
        ProbeStore,
        check_questions_fit,
        decoding_settings,
        load_probe_config,
        load_questions,
        probe_checkpoint,
    )
    from ..report import checkpoints

    run_dir = Path(args.run_dir)
    found = [c for c in checkpoints(run_dir) if args.steps is None or _step(c) in args.steps]
    if not found:
        raise FileNotFoundError(
            f"{run_dir}: no checkpoint-N dirs to probe" + (f" for steps {args.steps}" if args.steps else "")
        )
    probe_args, questions = load_probe_config(run_dir) or (ProbeArguments(), None)
    given = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(ProbeArguments)
        if getattr(args, f.name, None) is not None
    }
    probe_args = dataclasses.replace(probe_args, **given)
    if "probe_questions" in given or questions is None:
        questions = load_questions(probe_args.probe_questions)
    decodings = decoding_settings(probe_args)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    store = ProbeStore(run_dir)
    for checkpoint in found:
        began = time.perf_counter()
        model, tokenizer = load_for_generation(str(checkpoint), device=device)
        check_questions_fit(
            questions,
            tokenizer,
            probe_args.probe_max_new_tokens,
            getattr(model.config, "max_position_embeddings", None),
        )
        state = _trainer_state(checkpoint)
        records = probe_checkpoint(
            model,
            tokenizer,
            questions,
            decodings,
            _step(checkpoint),
            state.get("log_history", []),
            state.get("epoch"),
            probe_args.probe_batch_size,
        )
        store.append(_step(checkpoint), records, checkpoint)
        print(
            format_summary(_step(checkpoint), summarize(records), len(questions), time.perf_counter() - began)
        )
    store.compact()  # a re-probed checkpoint's newest answers replace the old ones
    print(f"{len(found)} checkpoint(s) probed -> {store.path}; next: mini-lm report {run_dir}")
    return 0


def _step(checkpoint) -> int:
    return int(checkpoint.name.split("-")[1])


def _trainer_state(checkpoint) -> dict:
    import json

    path = checkpoint / "trainer_state.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
