"""Load test of `mini-lm serve` on loopback: requests/s and p50/p99 latency at 1, 4, 16 clients.

    python bench/serve_load.py                                 # tiny random model, ~3 min on 2 cores
    python bench/serve_load.py --model-dir runs/quickstart/model --max-tokens 64
    python bench/serve_load.py --stream                        # time to first token, streamed requests

Each configuration runs `mini-lm serve` in a subprocess (the server owns its cores and GIL) and
drives it from asyncio + httpx. The default model is random-init with its stop tokens' output rows
zeroed, so every greedy request generates exactly --max-tokens tokens: equal work per request.
Dynamic batching is compared side by side with batching off (--max-batch-size 1): compare ratios,
not absolute figures, on a shared machine. Bounded: --requests per level, --level-seconds each.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

PROMPTS = [
    "王伟出生于",
    "李娜在上海",
    "Wei Wang was born",
    "Na Li works in",
    "中国的历史",
    "人工智能是",
    "The weather",
    "def add(a, b):",
]


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-dir", help="serve this model (default: a tiny random Qwen2 built here)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--requests", type=int, default=48, help="requests per concurrency level")
    parser.add_argument("--level-seconds", type=float, default=45.0, help="stop starting requests after this")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument(
        "--batch-sizes", type=int, nargs="+", default=[8, 1], help="server --max-batch-size values"
    )
    parser.add_argument(
        "--stream", action="store_true", help="streamed requests; also reports time to first token"
    )
    parser.add_argument("--torch-threads", type=int, default=1)
    parser.add_argument("--output", default="runs/bench/serve_load.json")
    return parser


def build_tiny_model(out: Path) -> Path:
    """Qwen2, hidden 128 x 4 layers, 600-token BPE; its stop tokens never win greedy decoding."""
    import torch

    from mini_lm.config import ModelArguments
    from mini_lm.models import build_model
    from mini_lm.tokenization import save_tokenizer, stop_token_ids, train_bpe_tokenizer

    tokenizer = train_bpe_tokenizer([p * 20 for p in PROMPTS] * 50, vocab_size=600)
    torch.manual_seed(0)
    model = build_model(
        ModelArguments(
            model_family="qwen2",
            hidden_size=128,
            num_hidden_layers=4,
            num_attention_heads=4,
            max_position_embeddings=1024,
        ),
        tokenizer,
    )
    with torch.no_grad():
        model.get_output_embeddings().weight[stop_token_ids(tokenizer)] = 0
    model.save_pretrained(out)
    save_tokenizer(tokenizer, out)
    return out


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(model_dir: Path, batch_size: int, threads: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "mini_lm.cli",
        "serve",
        str(model_dir),
        "--port",
        str(port),
        "--max-batch-size",
        str(batch_size),
        "--max-concurrent",
        "64",
        "--torch-threads",
        str(threads),
        "--log-level",
        "warning",
    ]
    proc = subprocess.Popen(cmd)
    url = f"http://127.0.0.1:{port}"
    for _ in range(900):
        try:
            if httpx.get(f"{url}/health").status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.2)
        if proc.poll() is not None:
            break
    proc.kill()
    raise RuntimeError(f"server did not start: {' '.join(cmd)}")


async def one_request(client: httpx.AsyncClient, url: str, prompt: str, args) -> dict:
    body = {"prompt": prompt, "max_tokens": args.max_tokens, "temperature": 0, "stream": args.stream}
    began = time.perf_counter()
    first, tokens = None, 0
    if args.stream:
        body["stream_options"] = {"include_usage": True}
        async with client.stream("POST", f"{url}/v1/completions", json=body) as response:
            response.raise_for_status()
            async for line in response.aiter_lines():
                if not line.startswith("data: {"):
                    continue
                event = json.loads(line.removeprefix("data: "))
                if first is None and event["choices"] and event["choices"][0]["text"]:
                    first = time.perf_counter() - began
                tokens = event.get("usage", {}).get("completion_tokens", tokens)
    else:
        response = await client.post(f"{url}/v1/completions", json=body)
        response.raise_for_status()
        tokens = response.json()["usage"]["completion_tokens"]
    return {"latency": time.perf_counter() - began, "first": first, "tokens": tokens}


async def run_level(url: str, concurrency: int, requests: int, args) -> dict:
    """`concurrency` clients each send requests back to back until `requests` are done or time is up."""
    done: list[dict] = []
    issued = 0
    deadline = time.monotonic() + args.level_seconds

    async def client_loop(client):
        nonlocal issued
        while issued < requests and time.monotonic() < deadline:
            issued += 1
            done.append(await one_request(client, url, PROMPTS[issued % len(PROMPTS)], args))

    async with httpx.AsyncClient(timeout=300, limits=httpx.Limits(max_connections=concurrency)) as client:
        began = time.perf_counter()
        await asyncio.gather(*(client_loop(client) for _ in range(concurrency)))
        wall = time.perf_counter() - began
    latencies = sorted(r["latency"] for r in done)
    firsts = sorted(r["first"] for r in done if r["first"] is not None)
    return {
        "concurrency": concurrency,
        "requests": len(done),
        "seconds": wall,
        "requests_per_s": len(done) / wall,
        "tokens_per_s": sum(r["tokens"] for r in done) / wall,
        "p50_s": percentile(latencies, 50),
        "p99_s": percentile(latencies, 99),
        "ttft_p50_s": percentile(firsts, 50) if firsts else None,
    }


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile: [1, 2, 3, 4], 50 -> 2; [1, 2, 3, 4], 99 -> 4."""
    rank = max(1, -(-len(sorted_values) * q // 100))
    return sorted_values[int(rank) - 1]


def print_table(rows: list[dict]) -> None:
    print(
        f"\n{'batch':>5} {'clients':>7} {'reqs':>5} {'req/s':>7} {'tok/s':>8} {'p50 s':>7} {'p99 s':>7} {'ttft p50':>8}"
    )
    for r in rows:
        ttft = f"{r['ttft_p50_s']:.3f}" if r["ttft_p50_s"] is not None else "-"
        print(
            f"{r['max_batch_size']:>5} {r['concurrency']:>7} {r['requests']:>5} {r['requests_per_s']:>7.2f} "
            f"{r['tokens_per_s']:>8.1f} {r['p50_s']:>7.3f} {r['p99_s']:>7.3f} {ttft:>8}"
        )


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(args.model_dir) if args.model_dir else build_tiny_model(Path(tmp) / "tiny")
        rows = []
        for batch_size in args.batch_sizes:
            proc, url = start_server(model_dir, batch_size, args.torch_threads)
            try:
                asyncio.run(run_level(url, 1, 2, args))  # warm-up: first-call overheads out of the figures
                for concurrency in args.concurrency:
                    level = asyncio.run(run_level(url, concurrency, args.requests, args))
                    rows.append({"max_batch_size": batch_size, **level})
                    print_table(rows[-1:])
            finally:
                proc.terminate()
                proc.wait(30)
    print_table(rows)
    result = {"config": {k: v for k, v in vars(args).items() if k != "output"}, "rows": rows}
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
