"""mini-lm audit-data --config recipes/configs/qwen2/sft_tiny_scratch.yaml [--max_length 512 ...]

Loads, renders and labels the SFT data exactly as recipes/sft.py would, prints the label audit,
and exits 1 when it fails (nothing or no <|im_end|> supervised). No model is built. A tokenizer
the config would train lands in a temporary folder unless the run's output_dir already has one.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="an SFT recipe YAML (recipes/configs/*/sft_*.yaml)")
    parser.add_argument("--samples", type=int, default=None, help="rendered samples to show (audit_samples)")
    parser.set_defaults(_overrides=True)  # any other --key value overrides the config, as for the recipe


def run(args: argparse.Namespace) -> int:
    import tempfile
    from pathlib import Path

    from ..config import SFT_ARGUMENTS, parse_config
    from ..data.sft import build_sft_datasets, load_sft_conversations, prepare_sft_tokenizer
    from ..validation import validate

    argv = ["--config", args.config, *args.overrides]
    if args.samples is not None:
        argv += ["--audit_samples", str(args.samples)]
    model_args, data_args, _, training_args, _ = validate(parse_config(SFT_ARGUMENTS, argv))
    chats = load_sft_conversations(data_args, seed=training_args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        has_tokenizer = (Path(training_args.output_dir) / "tokenizer" / "tokenizer.json").is_file()
        tokenizer = prepare_sft_tokenizer(
            model_args, data_args, training_args.output_dir if has_tokenizer else tmp, chats
        )
        audit = build_sft_datasets(chats, tokenizer, data_args).audit
    print(audit.render())
    return 1 if audit.problems() else 0
