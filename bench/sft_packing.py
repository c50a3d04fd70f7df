"""SFT throughput: padded batches vs padding-free packing, real (non-pad) tokens/s, one run.

    python bench/sft_packing.py                       # CPU: tiny Qwen2, minimind tokenizer; read the RATIO
    python bench/sft_packing.py --max-length 1024 --batch-size 16
    python bench/sft_packing.py --device cuda         # GPU: bf16, FlashAttention-2 varlen when installed

Data: sharegpt_zh_1k rendered and labelled exactly as recipes/sft.py does (whole exchanges up to
--max-length). padded: --batch-size conversations per step, right-padded to the longest
(SFTCollator, attention_mask). packed: --batch-size rows of --max-length, conversations packed
best-fit-decreasing with position_ids restarting (the collator recipes/sft.py picks for this
attention: block-diagonal mask on SDPA, flattened varlen on FlashAttention-2); the packed path
is first checked to give the same logits as unpacked conversations. Each step is forward +
backward + AdamW on the same model. The two modes run interleaved (padded, packed, padded, ...)
for --rounds rounds so machine noise hits both; tokens/s counts real tokens only.
Prints a table and writes JSON (--out).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch
import transformers

from mini_lm.config import ModelArguments, SFTDataArguments
from mini_lm.data.chat import load_conversations
from mini_lm.data.sft import encode_chats
from mini_lm.data.sft_packing import (
    SFTCollator,
    check_packed_attention,
    make_sft_collator,
    pack_conversations,
)
from mini_lm.models import build_model
from mini_lm.tokenization import load_tokenizer, set_chat_template

DATA = Path(os.environ.get("MINI_LM_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(DATA / "sft/sharegpt_zh_1k.jsonl"))
    parser.add_argument(
        "--tokenizer",
        default=None,
        help="tokenizer dir (default: minimind on CPU, the real Qwen2.5 tokenizer on GPU)",
    )
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--max-length", type=int, default=2048)
    parser.add_argument(
        "--batch-size", type=int, default=8, help="conversations (padded) or rows (packed) per step"
    )
    parser.add_argument("--steps", type=int, default=4, help="measured steps per mode per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--hidden-size", type=int, default=None, help="default: 128 on CPU, 512 on GPU")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument(
        "--attn", default="auto", help="auto | sdpa | eager | flex_attention | flash_attention_2"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/bench/sft_packing.json")
    return parser


def build(opts, device: str):
    gpu = device == "cuda"
    tokenizer = load_tokenizer(
        opts.tokenizer or DATA / ("tokenizers/qwen2.5" if gpu else "tokenizers/minimind")
    )
    set_chat_template(tokenizer, None)
    chat = load_conversations([opts.data])
    encoded = encode_chats(chat, tokenizer, SFTDataArguments(max_length=opts.max_length))
    convs = encoded.filter(lambda drop: not drop, input_columns="drop").select_columns(
        ["input_ids", "labels"]
    )
    hidden = opts.hidden_size or (512 if gpu else 128)
    args = ModelArguments(
        model_family="qwen2",
        hidden_size=hidden,
        num_hidden_layers=opts.layers,
        num_attention_heads=hidden // 64 if gpu else 4,
        num_key_value_heads=2,
        intermediate_size=3 * hidden,
        max_position_embeddings=opts.max_length,
        attn_implementation=opts.attn,
    )
    model = build_model(args, tokenizer, packed_rows=True).to(device)  # auto: the kernel for packed rows
    return tokenizer, convs, model


def batches(features: list[dict], size: int, seed: int):
    """Endless shuffled batches of features."""
    generator = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(len(features), generator=generator).tolist()
        for i in range(0, len(order) - size + 1, size):
            yield [features[j] for j in order[i : i + size]]


def run_steps(model, optimizer, collator, stream, steps: int, device: str) -> tuple[int, int, float]:
    """(real tokens, computed tokens, seconds) over ``steps`` optimizer steps."""
    real = computed = 0
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda")
    began = time.perf_counter()
    for _ in range(steps):
        features = next(stream)
        batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in collator(features).items()}
        real += sum(len(f["input_ids"]) for f in features)
        computed += batch["input_ids"].numel()
        with autocast:
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    if device == "cuda":
        torch.cuda.synchronize()
    return real, computed, time.perf_counter() - began


def main(argv: list[str] | None = None) -> dict:
    opts = make_parser().parse_args(argv)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if opts.device == "auto" else opts.device
    torch.manual_seed(opts.seed)
    tokenizer, convs, model = build(opts, device)
    rows = pack_conversations(convs, opts.max_length)
    collators = {
        "padded": SFTCollator(tokenizer.pad_token_id),
        "packed": make_sft_collator(model, tokenizer, True),
    }
    check_packed_attention(model, collators["packed"], torch.bfloat16 if device == "cuda" else None)
    streams = {
        "padded": batches(list(convs), opts.batch_size, opts.seed),
        "packed": batches(list(rows), opts.batch_size, opts.seed),
    }
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    totals = {mode: [0, 0, 0.0] for mode in streams}
    for mode in streams:  # warm-up step each, not counted
        run_steps(model, optimizer, collators[mode], streams[mode], 1, device)
    for _ in range(opts.rounds):
        for mode in streams:
            for i, value in enumerate(
                run_steps(model, optimizer, collators[mode], streams[mode], opts.steps, device)
            ):
                totals[mode][i] += value
    results = {
        mode: {
            "real_tokens": real,
            "computed_tokens": computed,
            "seconds": round(seconds, 3),
            "real_tokens_per_second": round(real / seconds, 1),
            "real_token_fraction": round(real / computed, 4),
        }
        for mode, (real, computed, seconds) in totals.items()
    }
    ratio = results["packed"]["real_tokens_per_second"] / results["padded"]["real_tokens_per_second"]
    report = {
        "benchmark": "sft_packing",
        "data": opts.data,
        "device": device,
        "device_name": torch.cuda.get_device_name() if device == "cuda" else platform.processor() or "cpu",
        "attn_implementation": model.config._attn_implementation,
        "packed_collator": type(collators["packed"]).__name__,
        "conversations": len(convs),
        "packed_rows": len(rows),
        "max_length": opts.max_length,
        "batch_size": opts.batch_size,
        "steps_per_mode": opts.steps * opts.rounds,
        "rounds": opts.rounds,
        "params_m": round(model.num_parameters() / 1e6, 2),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "results": results,
        "packed_over_padded": round(ratio, 3),
    }
    print(format_table(report))
    Path(opts.out).parent.mkdir(parents=True, exist_ok=True)
    Path(opts.out).write_text(json.dumps(report, indent=2), encoding="utf-8")
    return report


def format_table(report: dict) -> str:
    lines = [
        f"SFT packing on {Path(report['data']).name}: {report['conversations']} conversations, "
        f"max_length {report['max_length']}, batch {report['batch_size']}, {report['device']} "
        f"({report['attn_implementation']}, {report['params_m']}M params)",
        f"{'mode':<8}{'real tok/s':>12}{'real/computed':>15}{'real tokens':>13}{'seconds':>10}",
    ]
    for mode, r in report["results"].items():
        lines.append(
            f"{mode:<8}{r['real_tokens_per_second']:>12,.0f}{r['real_token_fraction']:>15.1%}"
            f"{r['real_tokens']:>13,}{r['seconds']:>10.1f}"
        )
    lines.append(f"packed / padded real tokens/s: {report['packed_over_padded']:.2f}x")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
