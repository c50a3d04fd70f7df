"""mini-lm export runs/sft_lora --merge --output runs/sft_merged [--base BASE_MODEL_DIR] [--force]

Merges a LoRA adapter saved by recipes/sft.py (use_peft: true) into its base model and writes a
plain HF checkpoint (weights, config, tokenizer with its chat template) that
``AutoModelForCausalLM.from_pretrained`` loads without peft. An existing non-empty --output needs
--force; the base model's dir and adapter dirs are never written into.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("adapter_dir", help="output_dir of a LoRA SFT run (holds adapter_config.json)")
    parser.add_argument("--output", required=True, help="directory for the merged model")
    parser.add_argument("--merge", action="store_true", help="merge the LoRA weights into the base model")
    parser.add_argument(
        "--base", default=None, help="base model dir (default: the one in adapter_config.json)"
    )
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    parser.add_argument(
        "--force",
        action="store_true",
        help="write into an existing non-empty --output (never into the base model or an adapter dir)",
    )


def run(args: argparse.Namespace) -> int:
    from ..lora import is_adapter_dir, merge_adapter

    if not args.merge:
        raise ValueError(
            "nothing to do: export needs --merge (a full fine-tune's output_dir is already a "
            "plain HF checkpoint)"
        )
    if not is_adapter_dir(args.adapter_dir):
        raise ValueError(f"{args.adapter_dir} is not a LoRA adapter dir (no adapter_config.json)")
    out = merge_adapter(args.adapter_dir, args.output, base=args.base, dtype=args.dtype, force=args.force)
    print(f"merged model -> {out} (load with AutoModelForCausalLM.from_pretrained)")
    return 0
