"""What every run logs on top of its Trainer, for any Trainer (HF ``Trainer``, TRL's ``DPOTrainer`` or
``SFTTrainer``): tokens/s and MFU on every training log, eval perplexity for LM losses, and the run
card ``run_info.json`` at the first step. Plain ``TrainerCallback``s, independent of how the loss
is computed; ``add_recipe_callbacks`` attaches them.

Metrics added to a log reach every reporter (console, TensorBoard, W&B) and ``trainer_state.json``:
these callbacks run ahead of the reporters in the Trainer's list and write into the log entry the
Trainer just recorded in ``state.log_history``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import TrainerCallback

from ..throughput import ThroughputMeter, device_peak_tflops, model_flops_per_token

logger = logging.getLogger(__name__)

RUN_INFO = "run_info.json"


@dataclass(frozen=True)
class TrainingShape:
    """What the instrumentation needs to know about a run that its Trainer does not say.

    ``seq_len``: tokens per row (block_size, max_length, max_len); ``sequences_per_example``: rows
    per dataset example (a DPO pair is two: chosen and rejected); ``reference_forward``: a frozen
    reference model also runs forward on every batch (DPO without precomputed log-probabilities),
    counted in MFU at 1/3 of a training step's FLOPs; ``lm_loss``: the loss is a token
    cross-entropy, so exp(eval_loss) is a perplexity (not for DPO's loss).
    """

    seq_len: int | None = None
    sequences_per_example: int = 1
    reference_forward: bool = False
    lm_loss: bool = True


def preference_shape(args) -> TrainingShape:
    """The shape of a DPO run from its ``DPOConfig``."""
    return TrainingShape(
        seq_len=args.max_length,
        sequences_per_example=2,
        reference_forward=not args.precompute_ref_log_probs,
        lm_loss=False,
    )


def add_to_log(state, logs: dict, extra: dict) -> None:
    """Put ``extra`` into the log being dispatched and into its ``state.log_history`` entry."""
    logs.update(extra)
    if extra and state.log_history:
        state.log_history[-1].update(extra)


class Throughput(TrainerCallback):
    """tokens_per_second (all ranks), tokens_per_second_per_device and mfu between two training logs;
    eval_perplexity next to eval_loss. Tokens are the Trainer's count (``include_num_input_tokens_seen``)."""

    def __init__(self, trainer, shape: TrainingShape):
        self.shape = shape
        peak = getattr(trainer.args, "peak_tflops", None) or device_peak_tflops()
        flops = model_flops_per_token(trainer.model, shape.seq_len) if shape.seq_len else None
        if flops and shape.reference_forward:
            flops *= 4 / 3  # + the reference forward: 2N of the 6N a training step costs per token
        if peak is None:
            logger.info("MFU not logged: unknown device peak (set peak_tflops to enable)")
        self.meter = ThroughputMeter(flops, peak, trainer.args.world_size)

    def on_train_begin(self, args, state, control, **kwargs):
        self.meter.start(state.num_input_tokens_seen, now=time.time())

    def on_log(self, args, state, control, logs=None, **kwargs):
        extra = {}
        if "loss" in logs and args.include_num_input_tokens_seen != "no":
            extra.update(self.meter.update(state.num_input_tokens_seen))
        if self.shape.lm_loss and "eval_loss" in logs:
            extra["eval_perplexity"] = round(math.exp(min(logs["eval_loss"], 50.0)), 4)
        add_to_log(state, logs, extra)


class RunCard(TrainerCallback):
    """``run_info.json`` after the first step: world size, ZeRO stage, precision, global batch, tokens
    per step, and whether every rank received different data (a fingerprint of each rank's first
    micro-batch, read by a forward pre-hook on the model; an error is logged when they are equal).
    The gather is collective: every rank reaches ``on_step_end``."""

    def __init__(self, trainer, shape: TrainingShape):
        self.trainer = trainer
        self.shape = shape
        self.info: dict | None = None
        self._hook = None
        self._fingerprint: int | None = None

    def on_step_begin(self, args, state, control, **kwargs):
        if self.info is None and self._hook is None:
            self._hook = self.trainer.model.register_forward_pre_hook(self._capture, with_kwargs=True)

    def _capture(self, module, inputs, kwargs):
        ids = kwargs.get("input_ids", inputs[0] if inputs else None)
        if ids is not None:
            self._fingerprint = zlib.crc32(ids.detach().cpu().numpy().tobytes())
        self._hook.remove()

    def on_step_end(self, args, state, control, **kwargs):
        if self.info is not None or self._hook is None:
            return
        self._hook.remove()  # a no-op when the first forward removed it
        self.info = run_info(self.trainer, self.shape, self._fingerprint)
        if state.is_world_process_zero:
            write_run_info(args.output_dir, self.info)


def run_info(trainer, shape: TrainingShape, fingerprint: int | None) -> dict:
    """The run card; collective (all ranks gather their first batch's fingerprint)."""
    args, accelerator = trainer.args, trainer.accelerator
    local = torch.tensor([fingerprint if fingerprint is not None else -1], dtype=torch.int64)
    fingerprints = accelerator.gather(local.to(accelerator.device)).tolist()
    batch = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
    info = {
        "trainer": type(trainer).__name__,
        "world_size": args.world_size,
        "distributed_type": getattr(accelerator.distributed_type, "value", str(accelerator.distributed_type)),
        "device": str(args.device),
        "precision": "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32",
        "attn_implementation": getattr(trainer.model.config, "_attn_implementation", None),
        "global_batch_size": batch,
        "tokens_per_step": batch * shape.sequences_per_example * shape.seq_len if shape.seq_len else None,
        "batch_fingerprints": fingerprints,
        "ranks_see_distinct_data": len(set(fingerprints)) == len(fingerprints),
    }
    if trainer.is_deepspeed_enabled:
        engine = trainer.model_wrapped
        info["deepspeed_zero_stage"] = engine.zero_optimization_stage()
        info["deepspeed_world_size"] = engine.world_size
    return info


def write_run_info(output_dir: str, info: dict) -> None:
    logger.info("run: %s", ", ".join(f"{k}={v}" for k, v in info.items() if k != "batch_fingerprints"))
    if not info["ranks_see_distinct_data"]:
        logger.error(
            "ranks received IDENTICAL first batches %s: data is not sharded across ranks "
            "(DeepSpeed on CPU needs use_cpu=True)",
            info["batch_fingerprints"],
        )
    os.makedirs(output_dir, exist_ok=True)
    Path(output_dir, RUN_INFO).write_text(json.dumps(info, indent=2), encoding="utf-8")
