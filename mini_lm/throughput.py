"""Training FLOPs per token, device peak table and MFU.

MFU = achieved model FLOP/s / peak FLOP/s, with the PaLM convention (appendix B):

    flops_per_token = 6 * N + 12 * n_layer * d_model * seq_len

N counts the parameters that take part in matmuls: everything but the embedding lookups,
plus the LM head (counted even when tied to the input embedding, since it is a real matmul).
The attention term is counted in full, as the convention does, although causal kernels skip
half of it. Peaks are dense bf16/fp16 tensor-core numbers from the vendors' datasheets.
"""

from __future__ import annotations

import logging
import time

import torch

logger = logging.getLogger(__name__)

# Dense bf16 (fp16 where bf16 is absent) TFLOP/s per device. Ordered: first substring match wins.
PEAK_TFLOPS: list[tuple[str, float]] = [
    ("GB200", 2500.0),
    ("B200", 2250.0),
    ("B100", 1750.0),
    ("H200", 989.0),
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),  # SXM5 / HBM3
    ("H800", 989.0),
    ("H20", 148.0),
    ("A100", 312.0),
    ("A800", 312.0),
    ("A10G", 70.0),
    ("A10", 125.0),
    ("L40S", 362.0),
    ("L40", 181.0),
    ("L4", 121.0),
    ("RTX 6000 Ada", 364.0),
    ("A6000", 155.0),
    ("RTX 4090", 165.0),
    ("RTX 3090", 71.0),
    ("V100", 125.0),
    ("T4", 65.0),
    ("MI300X", 1307.0),
    ("MI250X", 383.0),
]


def peak_tflops_for(device_name: str) -> float | None:
    """'NVIDIA H100 80GB HBM3' -> 989.0; 'NVIDIA H100 PCIe' -> 756.0; unknown -> None."""
    for pattern, tflops in PEAK_TFLOPS:
        if pattern.lower() in device_name.lower():
            return tflops
    return None


def device_peak_tflops() -> float | None:
    """Peak of the current CUDA device, or None on CPU / unknown GPUs."""
    if not torch.cuda.is_available():
        return None
    return peak_tflops_for(torch.cuda.get_device_name())


def matmul_parameters(model: torch.nn.Module) -> int:
    """Parameters used in matmuls: all but embedding tables, plus a tied LM head."""
    embedding_ids = {
        id(p) for m in model.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters()
    }
    seen, total = set(), 0
    for p in model.parameters():
        if id(p) not in seen and id(p) not in embedding_ids:
            seen.add(id(p))
            total += p.numel()
    get_out = getattr(model, "get_output_embeddings", None)
    head = get_out() if get_out is not None else None
    if head is not None and id(head.weight) in embedding_ids:
        total += head.weight.numel()  # tied: the lookup is free, the LM-head matmul is not
    return total


def flops_per_token(n_matmul_params: int, n_layer: int, d_model: int, seq_len: int) -> float:
    """Training (forward + backward) FLOPs per token: 6N + 12 * L * d * T.

    >>> flops_per_token(100, 2, 8, 16)  # 600 + 12*2*8*16
    3672.0
    """
    return 6.0 * n_matmul_params + 12.0 * n_layer * d_model * seq_len


def model_flops_per_token(model: torch.nn.Module, seq_len: int) -> float:
    cfg = model.config
    n_layer = getattr(cfg, "num_hidden_layers", None) or cfg.n_layer
    d_model = getattr(cfg, "hidden_size", None) or cfg.n_embd
    return flops_per_token(matmul_parameters(model), n_layer, d_model, seq_len)


def mfu(tokens_per_second: float, flops_per_token_: float, peak_tflops: float, n_devices: int = 1) -> float:
    """Fraction of the devices' combined peak: 1e5 tok/s x 3e9 FLOP/tok on one 989-TFLOP/s H100 -> 0.303."""
    return tokens_per_second * flops_per_token_ / (peak_tflops * 1e12 * n_devices)


class ThroughputMeter:
    """Tokens/s (and MFU) over the interval between two training log events."""

    def __init__(self, flops_per_token_: float | None, peak_tflops: float | None, n_devices: int):
        self.flops_per_token = flops_per_token_
        self.peak_tflops = peak_tflops
        self.n_devices = max(1, n_devices)
        self._last: tuple[float, int] | None = None

    def start(self, tokens_seen: int, now: float | None = None) -> None:
        self._last = (time.time() if now is None else now, tokens_seen)

    def update(self, tokens_seen: int, now: float | None = None) -> dict[str, float]:
        """Metrics since the previous call (or ``start``); {} before the first interval."""
        now = time.time() if now is None else now
        if self._last is None:
            self._last = (now, tokens_seen)
            return {}
        elapsed, tokens = now - self._last[0], tokens_seen - self._last[1]
        self._last = (now, tokens_seen)
        if elapsed <= 0 or tokens <= 0:
            return {}
        tps = tokens / elapsed
        out = {
            "tokens_per_second": round(tps, 1),
            "tokens_per_second_per_device": round(tps / self.n_devices, 1),
        }
        if self.flops_per_token and self.peak_tflops:
            out["mfu"] = round(mfu(tps, self.flops_per_token, self.peak_tflops, self.n_devices), 4)
        return out
