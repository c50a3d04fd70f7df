"""mini-lm report RUN_DIR [--out DIR]: Markdown report + PNG plots of how a run matured."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="a recipe's output_dir (holding probes.jsonl / checkpoint-* / trainer_state.json)")
    parser.add_argument("--out", help="where to write report.md and the PNGs (default: RUN_DIR/report)")


def run(args: argparse.Namespace) -> int:
    from ..report import write_report

    path = write_report(args.run_dir, args.out)
    print(f"report: {path}")
    return 0
