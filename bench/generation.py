"""Generation benchmark (seed 003): ms/token by prompt length, tokens/s by batch, KV cache on vs off.

    python bench/generation.py                       # CPU: a few minutes; prints a table, writes JSON
    python bench/generation.py --device cuda --dtype bfloat16 --hidden 768 --layers 12 --out bench/results/gpu.json
    python bench/generation.py --quick               # seconds: smoke run, ratios meaningless

Everything goes through ``mini_lm.generation.generate`` (HF generate, left padding, seeded), on a
random-init causal LM: speed does not depend on what the weights know. ``min_new_tokens`` pins
every run to exactly the tokens asked for. Prompts are real Chinese text cut to the token counts.

Targets (ratios, so they hold on a loaded CPU): the KV cache makes 512 new tokens >= 5x faster
than recomputing the whole sequence each step; batch 8 gives >= 5x the tokens/s of batch 1
(128 new tokens after 64-token prompts, the whole generate call timed; "decode tokens/s" leaves
the prefill out). Timings are the fastest of ``--repeats``, taken round-robin across the runs
compared. On a shared CPU, ``--threads 1`` keeps other processes from stalling torch's thread
team, which otherwise makes single timings swing by 10x.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from mini_lm.config import ModelArguments
from mini_lm.generation import GenerationSettings, generate
from mini_lm.models import build_model
from mini_lm.tokenization import load_tokenizer

DATA = Path(os.environ.get("MINI_LM_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
TARGETS = {"kv_cache_speedup_512": 5.0, "batch8_over_batch1": 5.0}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--family", default="qwen2", choices=["qwen2", "gpt2"])
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--kv-heads", type=int, default=None, help="qwen2 GQA key/value heads (default: --heads)")
    p.add_argument("--intermediate", type=int, default=None, help="MLP width (default: 4 x hidden)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--tokenizer", default=str(DATA / "tokenizers/minimind"))
    p.add_argument("--corpus", default=str(DATA / "corpus/zh/hongloumeng.txt"))
    p.add_argument("--prompt-lengths", type=int, nargs="+", default=[64, 128, 256, 512])
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--new-tokens", type=int, default=32, help="decode length for the prompt-length runs")
    p.add_argument("--batch-new-tokens", type=int, default=128, help="decode length for the batch runs")
    p.add_argument("--cache-new-tokens", type=int, default=512, help="decode length for cache on vs off")
    p.add_argument("--repeats", type=int, default=3, help="fastest of this many timings (taken round-robin)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--quick", action="store_true", help="tiny sizes, one repeat: checks the script runs")
    p.add_argument("--out", default="bench/results/generation.json")
    args = p.parse_args(argv)
    if args.quick:
        args.prompt_lengths, args.batch_sizes, args.new_tokens, args.batch_new_tokens = [16, 32], [1, 2], 4, 4
        args.cache_new_tokens, args.repeats, args.hidden, args.layers = 16, 1, 32, 2
    return args


def prompt_texts(tokenizer, corpus: str, length: int, count: int) -> list[str]:
    """``count`` different passages of the corpus, each exactly ``length`` tokens long once re-encoded."""
    text = Path(corpus).read_text(encoding="utf-8")
    ids = tokenizer(text[: 400 * length * count], add_special_tokens=False)["input_ids"]
    prompts = []
    for start in range(
        0, len(ids) - length, length
    ):  # a cut inside a multi-token character does not re-encode
        prompt = tokenizer.decode(ids[start : start + length])
        if len(tokenizer(prompt, add_special_tokens=False)["input_ids"]) == length:
            prompts.append(prompt)
            if len(prompts) == count:
                return prompts
    raise RuntimeError(f"{corpus}: found only {len(prompts)} of {count} passages of exactly {length} tokens")


def run_once(model, tokenizer, prompts: list[str], new_tokens: int, use_cache: bool) -> float:
    """Wall seconds of one batched generate call producing exactly ``new_tokens`` per prompt."""
    settings = GenerationSettings(
        max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, use_cache=use_cache
    )
    began = time.perf_counter()
    results = generate(model, tokenizer, prompts, settings, batch_size=len(prompts))
    seconds = time.perf_counter() - began
    assert all(len(r.token_ids) == new_tokens for r in results), "a run stopped early"
    return seconds


def measure(runs: dict[str, tuple], repeats: dict[str, int] | int) -> dict[str, float]:
    """Fastest of several timings per run, taken round-robin so that load changes hit every run alike.

    ``runs`` maps a name to ``run_once`` arguments; the minimum is the least disturbed timing.
    """
    counts = {name: repeats if isinstance(repeats, int) else repeats[name] for name in runs}
    times: dict[str, list[float]] = {name: [] for name in runs}
    for round_ in range(max(counts.values())):
        for name, arguments in runs.items():
            if round_ < counts[name]:
                times[name].append(run_once(*arguments))
    return {name: min(seconds) for name, seconds in times.items()}


def bench_prompt_lengths(model, tok, args) -> list[dict]:
    runs = {}
    for length in args.prompt_lengths:
        prompt = prompt_texts(tok, args.corpus, length, 1)
        runs[f"prefill {length}"] = (model, tok, prompt, 1, True)
        runs[f"total {length}"] = (model, tok, prompt, args.new_tokens, True)
    best = measure(runs, args.repeats)
    return [
        {
            "prompt_tokens": n,
            "prefill_ms": 1000 * best[f"prefill {n}"],
            "decode_ms_per_token": 1000 * (best[f"total {n}"] - best[f"prefill {n}"]) / (args.new_tokens - 1),
            "ms_per_token": 1000 * best[f"total {n}"] / args.new_tokens,
        }
        for n in args.prompt_lengths
    ]


def bench_batches(model, tok, args) -> list[dict]:
    runs = {}
    for batch in args.batch_sizes:
        prompts = prompt_texts(tok, args.corpus, args.prompt_lengths[0], batch)
        runs[(batch, "all")] = (model, tok, prompts, args.batch_new_tokens, True)
        runs[(batch, "prefill")] = (model, tok, prompts, 1, True)
    best = measure(runs, args.repeats)
    rows = []
    for b in args.batch_sizes:
        total, prefill = best[(b, "all")], best[(b, "prefill")]
        rows.append(
            {
                "batch": b,
                "seconds": total,
                "tokens_per_second": b * args.batch_new_tokens / total,
                "decode_tokens_per_second": b * (args.batch_new_tokens - 1) / (total - prefill),
            }
        )
    return rows


def bench_cache(model, tok, args) -> dict:
    prompt = prompt_texts(tok, args.corpus, args.prompt_lengths[0], 1)
    runs = {
        "on": (model, tok, prompt, args.cache_new_tokens, True),
        "off": (model, tok, prompt, args.cache_new_tokens, False),
    }
    best = measure(runs, {"on": args.repeats, "off": max(1, args.repeats // 2)})  # off is the slow one
    return {
        "prompt_tokens": args.prompt_lengths[0],
        "new_tokens": args.cache_new_tokens,
        "cache_on_seconds": best["on"],
        "cache_off_seconds": best["off"],
        "speedup": best["off"] / best["on"],
    }


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    tok = load_tokenizer(args.tokenizer)
    longest = max(
        max(args.prompt_lengths) + args.new_tokens,
        args.prompt_lengths[0] + max(args.cache_new_tokens, args.batch_new_tokens),
    )
    model = build_model(
        ModelArguments(
            model_family=args.family,
            hidden_size=args.hidden,
            num_hidden_layers=args.layers,
            num_attention_heads=args.heads,
            num_key_value_heads=args.kv_heads,
            intermediate_size=args.intermediate,
            max_position_embeddings=longest,
        ),
        tok,
    )
    model.to(device=args.device, dtype=getattr(torch, args.dtype)).eval()
    report = {
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "model": {
            "family": args.family,
            "hidden": args.hidden,
            "layers": args.layers,
            "dtype": args.dtype,
            "parameters": model.num_parameters(),
            "vocab": len(tok),
        },
        "machine": {
            "device": args.device,
            "torch_threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "torch": torch.__version__,
            "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
        },
        "by_prompt_length": bench_prompt_lengths(model, tok, args),
        "by_batch": bench_batches(model, tok, args),
        "kv_cache": bench_cache(model, tok, args),
    }
    batches = {row["batch"]: row["tokens_per_second"] for row in report["by_batch"]}
    ratios = {"kv_cache_speedup_512": report["kv_cache"]["speedup"]}
    if 1 in batches and 8 in batches:
        ratios["batch8_over_batch1"] = batches[8] / batches[1]
    report["ratios"] = {
        k: {"value": v, "target": TARGETS[k], "met": v >= TARGETS[k]} for k, v in ratios.items()
    }
    print_table(report)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return report


def print_table(report: dict) -> None:
    m = report["model"]
    print(
        f"\n{m['family']} {m['hidden']}x{m['layers']} ({m['parameters'] / 1e6:.1f}M params) on "
        f"{report['machine']['device']}, {report['machine']['torch_threads']} threads"
    )
    print(f"\n{'prompt tokens':>13} {'prefill ms':>11} {'decode ms/token':>16} {'ms/token (all)':>15}")
    for r in report["by_prompt_length"]:
        print(
            f"{r['prompt_tokens']:>13} {r['prefill_ms']:>11.1f} {r['decode_ms_per_token']:>16.2f} {r['ms_per_token']:>15.2f}"
        )
    print(f"\n{'batch':>5} {'seconds':>8} {'tokens/s':>9} {'decode tokens/s':>16}")
    for r in report["by_batch"]:
        print(
            f"{r['batch']:>5} {r['seconds']:>8.2f} {r['tokens_per_second']:>9.1f} {r['decode_tokens_per_second']:>16.1f}"
        )
    c = report["kv_cache"]
    print(
        f"\nKV cache, {c['new_tokens']} new tokens after {c['prompt_tokens']}: on {c['cache_on_seconds']:.2f} s, "
        f"off {c['cache_off_seconds']:.2f} s, speedup {c['speedup']:.1f}x"
    )
    for name, r in report["ratios"].items():
        print(f"{name}: {r['value']:.1f}x (target >= {r['target']:.0f}x) {'met' if r['met'] else 'NOT MET'}")


if __name__ == "__main__":
    main()
