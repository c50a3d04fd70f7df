"""mini-lm report RUN_DIR [RUN_DIR ...] [--out DIR]: Markdown report + PNG plots of how a run matured.

Several run dirs are stages of one story, laid end to end: mini-lm report runs/x/pretrain runs/x/sft
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "run_dirs",
        nargs="+",
        metavar="RUN_DIR",
        help="a recipe's output_dir (probes.jsonl / checkpoint-* / trainer_state.json); "
        "several: stages in order, e.g. pretraining then SFT",
    )
    parser.add_argument("--out", help="where report.md and the PNGs go (default: LAST_RUN_DIR/report)")


def run(args: argparse.Namespace) -> int:
    from ..report import write_report

    path = write_report(args.run_dirs, args.out)
    print(f"report: {path}")
    return 0
