"""mini-lm eval MODEL_OR_RUN_DIR --benchmark cmmlu --data DIR [--subjects ...] [--shots 0|5] [--limit N]

Multiple-choice accuracy per subject and overall, next to chance and its significance (mini_lm/
evaluation.py); prints a table and writes JSON with every question's prediction. On a run dir (a
recipe's output_dir) it evaluates every checkpoint-N and adds the results to RUN_DIR/benchmarks.jsonl,
which `mini-lm report RUN_DIR` shows. --benchmark mc --data FILE scores a multiple-choice JSONL / YAML
in the probe questions' format ({"prompt" | "question", "choices", "answer", "group"}).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..multiple_choice import BENCHMARKS, MAX_SHOTS

    parser.add_argument(
        "target", metavar="MODEL_OR_RUN_DIR", help="a saved model dir, or a run dir with checkpoint-N"
    )
    parser.add_argument("--benchmark", required=True, choices=BENCHMARKS)
    parser.add_argument(
        "--data", required=True, help="cmmlu: the folder holding dev/ and test/; mc: the file"
    )
    parser.add_argument("--subjects", nargs="+", help="only these subjects (default: all)")
    parser.add_argument("--shots", type=int, default=0, choices=range(MAX_SHOTS + 1), metavar="0-5")
    parser.add_argument("--limit", type=int, help="the first N questions of each subject")
    parser.add_argument("--split", default="test", help="cmmlu: test (default) or dev")
    parser.add_argument("--steps", type=int, nargs="+", help="run dir: only these checkpoint steps")
    parser.add_argument("--batch-size", type=int, default=32, help="prompt+choice rows per forward")
    parser.add_argument("--device", help="cpu | cuda | cuda:1 ... (default: cuda when available)")
    parser.add_argument(
        "--out", help="the JSON file (default: TARGET/eval/<benchmark>_<shots>shot[_limitN].json)"
    )


def run(args: argparse.Namespace) -> int:
    import torch

    from ..evaluation import BenchmarkSpec, BenchmarkStore, evaluate, format_table, load_benchmark, write_json
    from ..generation import load_for_generation
    from ..report import checkpoints
    from ..tokenization import load_tokenizer

    target = Path(args.target)
    if not target.is_dir():
        raise FileNotFoundError(f"not a directory: {target}")
    spec = BenchmarkSpec(args.benchmark, args.data, args.subjects, args.shots, args.limit, args.split)
    found = [c for c in checkpoints(target) if args.steps is None or _step(c) in args.steps]
    if not found and (args.steps or not (target / "config.json").is_file()):
        raise FileNotFoundError(
            f"{target}: neither a model dir (config.json) nor a run dir with checkpoint-N"
            + (f" for steps {args.steps}" if args.steps else "")
        )
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    models = found or [target]
    items = load_benchmark(spec, load_tokenizer(str(models[0])))  # bad data fails before any weights load
    results = []
    for model_dir in models:
        model, tokenizer = load_for_generation(str(model_dir), device=device)
        result = evaluate(model, tokenizer, items, spec, args.batch_size)
        result.model = str(model_dir)
        if found:
            result.meta = {"step": _step(model_dir), "checkpoint": model_dir.name}
            BenchmarkStore(target).append(_step(model_dir), result)
        print(format_table(result), end="\n\n")
        results.append(result)
    path = write_json(results if found else results[0], args.out or target / "eval" / f"{spec.slug}.json")
    print(
        f"-> {path}"
        + (
            f"; {len(found)} checkpoint(s) in {target / 'benchmarks.jsonl'}, next: mini-lm report {target}"
            if found
            else ""
        )
    )
    return 0


def _step(checkpoint: Path) -> int:
    return int(checkpoint.name.split("-")[1])
