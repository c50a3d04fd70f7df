"""mini-lm generate MODEL_DIR --prompt 中国的历史 --prompt 人工智能是 [--greedy] [--out results.jsonl]

Any model dir a recipe saved (GPT-2, Qwen2, the BERT adapter) through the one generation path:
batched prompts (left padding), KV cache for causal LMs, per-prompt timing.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model_dir", help="a model dir saved by a recipe (or any local HF causal LM)")
    parser.add_argument("--prompt", action="append", default=[], help="a prompt; repeat for several")
    parser.add_argument("--prompts-file", help="JSONL with a 'prompt' field (and optional 'expected')")
    parser.add_argument("--limit", type=int, default=None, help="first N prompts of --prompts-file")
    parser.add_argument("--out", help="write one JSON line per prompt: prompt, text, token ids, timing")
    parser.add_argument("--batch-size", type=int, default=8, help="prompts per generate call (left-padded)")
    parser.add_argument(
        "--quiet", action="store_true", help="with expected answers: print 8 samples and the score"
    )
    add_sampling_arguments(parser, max_new_tokens=60, temperature=0.8)


def add_sampling_arguments(parser: argparse.ArgumentParser, max_new_tokens: int, temperature: float) -> None:
    """The decoding flags shared by ``generate`` and ``chat``."""
    group = parser.add_argument_group("decoding")
    group.add_argument("--max-new-tokens", type=int, default=max_new_tokens)
    group.add_argument("--greedy", action="store_true", help="greedy decoding (default: sampling)")
    group.add_argument("--temperature", type=float, default=temperature)
    group.add_argument("--top-k", type=int, default=50, help="0 disables it")
    group.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling; 1.0 disables it")
    group.add_argument("--repetition-penalty", type=float, default=1.0)
    group.add_argument(
        "--stop",
        action="append",
        default=[],
        metavar="TOKEN",
        help="extra stop token (a vocabulary entry such as 。 or [SEP]); repeatable. "
        "eos / <|endoftext|> / <|im_end|> always stop",
    )
    group.add_argument("--seed", type=int, default=0)
    group.add_argument(
        "--no-kv-cache", action="store_true", help="recompute every step (to measure the cache)"
    )


def settings_from_args(args: argparse.Namespace, tokenizer):
    """Flags -> GenerationSettings; --stop tokens are looked up in the vocabulary."""
    from ..generation import GenerationSettings
    from ..tokenization import stop_token_ids

    vocab = tokenizer.get_vocab()
    unknown = [tok for tok in args.stop if tok not in vocab]
    if unknown:
        raise ValueError(f"--stop {', '.join(unknown)}: not a single token of this model's vocabulary")
    stops = stop_token_ids(tokenizer) + [
        vocab[tok] for tok in args.stop if vocab[tok] not in stop_token_ids(tokenizer)
    ]
    return GenerationSettings(
        max_new_tokens=args.max_new_tokens,
        do_sample=not args.greedy,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        repetition_penalty=args.repetition_penalty,
        seed=args.seed,
        stop_token_ids=stops or None,
        use_cache=not args.no_kv_cache,
    )


def read_prompts(args: argparse.Namespace) -> list[dict]:
    records = [{"prompt": p} for p in args.prompt]
    if args.prompts_file:
        from ..records import read_records

        for where, record in read_records(args.prompts_file):
            if not isinstance(record, dict) or not isinstance(record.get("prompt"), str):
                raise ValueError(f"{where}: needs a string field 'prompt'")
            records.append(record)
        records = records[: len(args.prompt) + args.limit] if args.limit else records
    if not records:
        raise ValueError("no prompts: give --prompt TEXT or --prompts-file FILE")
    return records


def timing(result, batch: int) -> str:
    """'24 tokens in 0.80 s (batch of 4): 30.0 tokens/s, stopped'"""
    n = len(result.token_ids)
    rate = n / result.seconds if result.seconds > 0 else float("inf")
    end = "stopped" if result.stopped else "hit max_new_tokens"
    return f"{n} tokens in {result.seconds:.2f} s (batch of {batch}): {rate:.1f} tokens/s, {end}"


def run(args: argparse.Namespace) -> int:
    from ..generation import generate, load_for_generation

    records = read_prompts(args)
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    model, tokenizer = load_for_generation(args.model_dir)
    settings = settings_from_args(args, tokenizer)
    results = generate(model, tokenizer, [r["prompt"] for r in records], settings, batch_size=args.batch_size)
    size = args.batch_size
    batches = [len(records[i // size * size : i // size * size + size]) for i in range(len(records))]
    shown = 8 if args.quiet else len(records)
    for record, result, batch in list(zip(records, results, batches))[:shown]:
        print(f"[{record['prompt']}] -> {record['prompt']}{result.text}")
        print(f"    {timing(result, batch)}")
        if "expected" in record:
            print(f"    expected: {record['expected']}")
    total_tokens = sum(len(r.token_ids) for r in results)
    total_seconds = sum(results[i].seconds for i in range(0, len(results), size))  # one wall time per batch
    print(
        f"{len(results)} prompts, {total_tokens} new tokens in {total_seconds:.2f} s "
        f"({total_tokens / max(total_seconds, 1e-9):.1f} tokens/s, batch size {args.batch_size})"
    )
    scored = [(r, res) for r, res in zip(records, results) if "expected" in r]
    if scored:
        hits = sum(str(r["expected"]) in res.text for r, res in scored)
        print(f"{hits}/{len(scored)} continuations contain the expected answer ({hits / len(scored):.0%})")
    if args.out:
        write_results(args.out, records, results, batches)
        print(f"wrote {len(results)} results to {args.out}")
    return 0


def write_results(path: str, records: list[dict], results: list, batches: list[int]) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for record, result, batch in zip(records, results, batches):
            row = {
                **record,
                "text": result.text,
                "token_ids": result.token_ids,
                "new_tokens": len(result.token_ids),
                "stopped": result.stopped,
                "seconds": round(result.seconds, 4),
                "batch": batch,
            }
            if "expected" in record:
                row["hit"] = str(record["expected"]) in result.text
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
