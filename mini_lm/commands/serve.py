"""mini-lm serve MODEL_DIR [--host 127.0.0.1] [--port 8000]: OpenAI-compatible API + chat page."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
from pathlib import Path

logger = logging.getLogger("mini_lm.serve")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model_dir", help="a model dir saved by a recipe (or any local HF causal LM)")
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default: loopback only; 0.0.0.0 exposes it to the network)",
    )
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--served-model-name", help="the model id clients send (default: the dir's name)")
    parser.add_argument(
        "--api-key",
        default=os.environ.get("MINI_LM_API_KEY"),
        help="require 'Authorization: Bearer KEY' on /v1 (default: $MINI_LM_API_KEY, else none)",
    )
    parser.add_argument("--device", help="cpu, cuda, cuda:1, mps (default: where from_pretrained puts it)")
    parser.add_argument("--dtype", default="auto", help="auto, float32, bfloat16, float16")
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=None,
        help="CPU intra-op threads (1 is fastest for tiny models on a busy machine)",
    )
    limits = parser.add_argument_group("limits (requests beyond them get a 4xx)")
    limits.add_argument(
        "--max-tokens-limit", type=int, default=512, help="largest max_tokens a request may ask"
    )
    limits.add_argument(
        "--default-max-tokens", type=int, default=128, help="max_tokens when a request gives none"
    )
    limits.add_argument(
        "--max-prompt-tokens", type=int, default=None, help="default: the model's context length"
    )
    limits.add_argument("--max-body-bytes", type=int, default=1 << 20)
    limits.add_argument(
        "--max-concurrent", type=int, default=32, help="requests queued or running; more get 429"
    )
    limits.add_argument("--max-rows-per-request", type=int, default=16, help="prompts x n in one request")
    batching = parser.add_argument_group("batching")
    batching.add_argument("--max-batch-size", type=int, default=8, help="rows per forward pass")
    batching.add_argument(
        "--batch-wait-ms",
        type=float,
        default=0.0,
        help="let a batch wait this long for more requests (throughput vs latency)",
    )
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])


def limits_from_args(args: argparse.Namespace):
    from ..serving import ServeLimits

    return ServeLimits(
        max_prompt_tokens=args.max_prompt_tokens,
        max_tokens=args.max_tokens_limit,
        default_max_tokens=args.default_max_tokens,
        max_body_bytes=args.max_body_bytes,
        max_concurrent=args.max_concurrent,
        max_batch_size=args.max_batch_size,
        max_rows_per_request=args.max_rows_per_request,
        batch_wait_ms=args.batch_wait_ms,
    )


def is_loopback(host: str) -> bool:
    """'127.0.0.1' -> True, 'localhost' -> True, '0.0.0.0' -> False, '::1' -> True."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from ..generation import load_for_generation
    from ..serving import check_api_key, create_app

    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    limits = limits_from_args(args)  # bad limits and keys fail before the model loads
    check_api_key(args.api_key)
    if not Path(args.model_dir).is_dir():
        raise FileNotFoundError(f"model dir not found: {args.model_dir}")
    if not is_loopback(args.host):
        logger.warning(
            "binding %s: the API is reachable from the network%s",
            args.host,
            "" if args.api_key else " WITHOUT authentication (set --api-key)",
        )
    if args.torch_threads:
        import torch

        torch.set_num_threads(args.torch_threads)
    model, tokenizer = load_for_generation(args.model_dir, device=args.device, dtype=args.dtype)
    name = args.served_model_name or Path(args.model_dir).resolve().name
    app = create_app(model, tokenizer, name, limits, api_key=args.api_key)
    logger.info("serving '%s' on http://%s:%d (chat page at /, API at /v1)", name, args.host, args.port)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, timeout_graceful_shutdown=5)
    return 0
