"""mini-lm generate MODEL_DIR --prompt 中国的历史 --prompt 人工智能是 [--greedy]"""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model_dir", help="a model dir saved by a recipe (or any local HF causal LM)")
    parser.add_argument("--prompt", action="append", default=[], help="a prompt; repeat for several")
    parser.add_argument("--prompts-file", help="JSONL with a 'prompt' field (and optional 'expected')")
    parser.add_argument("--limit", type=int, default=None, help="first N prompts of --prompts-file")
    parser.add_argument("--max-new-tokens", type=int, default=60)
    parser.add_argument("--greedy", action="store_true", help="greedy decoding (default: sampling)")
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--top-k", type=int, default=50)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--repetition-penalty", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--quiet", action="store_true", help="with expected answers: print 8 samples and the score")


def read_prompts(args: argparse.Namespace) -> list[dict]:
    records = [{"prompt": p} for p in args.prompt]
    if args.prompts_file:
        with open(args.prompts_file, encoding="utf-8") as f:
            for line_no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as err:
                    raise ValueError(f"{args.prompts_file}:{line_no}: not valid JSON ({err.msg})") from err
                if not isinstance(record, dict) or not isinstance(record.get("prompt"), str):
                    raise ValueError(f"{args.prompts_file}:{line_no}: needs a string field 'prompt'")
                records.append(record)
        records = records[: len(args.prompt) + args.limit] if args.limit else records
    if not records:
        raise ValueError("no prompts: give --prompt TEXT or --prompts-file FILE")
    return records


def run(args: argparse.Namespace) -> int:
    from ..generation import GenerationSettings, generate, load_for_generation

    records = read_prompts(args)
    settings = GenerationSettings(
        max_new_tokens=args.max_new_tokens, do_sample=not args.greedy, temperature=args.temperature,
        top_k=args.top_k, top_p=args.top_p, repetition_penalty=args.repetition_penalty, seed=args.seed,
    )
    model, tokenizer = load_for_generation(args.model_dir)
    results = generate(model, tokenizer, [r["prompt"] for r in records], settings, batch_size=args.batch_size)
    shown = 8 if args.quiet else len(records)
    for record, result in list(zip(records, results))[:shown]:
        print(f"[{record['prompt']}] -> {record['prompt']}{result.text}")
        if "expected" in record:
            print(f"    expected: {record['expected']}")
    scored = [(r, res) for r, res in zip(records, results) if "expected" in r]
    if scored:
        hits = sum(str(r["expected"]) in res.text for r, res in scored)
        print(f"{hits}/{len(scored)} continuations contain the expected answer ({hits / len(scored):.0%})")
    return 0
