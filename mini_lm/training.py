"""What every recipe does around ``Trainer.train()``: logging and reporting setup, resume, save, eval.

trainer = MiniLMTrainer(model=model, args=args, train_dataset=train, eval_dataset=val,
                        data_collator=collator, processing_class=tokenizer, seq_len=512)
run_training(trainer)
"""

from __future__ import annotations

import json
import logging
import math
import os
import zlib
from pathlib import Path

import torch
from transformers import Trainer, TrainerState, TrainingArguments
from transformers.trainer_utils import TrainOutput

from .checkpoints import choose_start, training_finished, whole_run_train_loss
from .throughput import ThroughputMeter, device_peak_tflops, model_flops_per_token

logger = logging.getLogger(__name__)


class MiniLMTrainer(Trainer):
    """HF Trainer whose logs also carry tokens/s, MFU and eval perplexity, and which writes a
    run card (``run_info.json``) at the first step: world size, ZeRO stage, global batch, and
    whether every rank received different data."""

    def __init__(self, *args, seq_len: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.seq_len = seq_len
        peak = getattr(self.args, "peak_tflops", None) or device_peak_tflops()
        flops = model_flops_per_token(self.model, seq_len) if seq_len else None
        if peak is None:
            logger.info("MFU not logged: unknown device peak (set peak_tflops to enable)")
        self.throughput = ThroughputMeter(flops, peak, self.args.world_size)
        self.run_info: dict | None = None

    def training_step(self, model, inputs, num_items_in_batch=None):
        if self.run_info is None:
            self.run_info = self._write_run_info(model, inputs)
        return super().training_step(model, inputs, num_items_in_batch)

    def _write_run_info(self, model, inputs) -> dict:
        """Collective (every rank calls it at its first micro-batch); rank 0 logs and writes."""
        ids = inputs["input_ids"].detach()
        fingerprint = torch.tensor(
            [zlib.crc32(ids.cpu().numpy().tobytes())], dtype=torch.int64, device=ids.device
        )
        fingerprints = self.accelerator.gather(fingerprint).tolist()
        args = self.args
        info = {
            "world_size": args.world_size,
            "distributed_type": getattr(
                self.accelerator.distributed_type, "value", str(self.accelerator.distributed_type)
            ),
            "device": str(args.device),
            "precision": "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32",
            "attn_implementation": getattr(self.model.config, "_attn_implementation", None),
            "global_batch_size": args.per_device_train_batch_size
            * args.gradient_accumulation_steps
            * args.world_size,
            "tokens_per_step": (
                args.per_device_train_batch_size
                * args.gradient_accumulation_steps
                * args.world_size
                * self.seq_len
            )
            if self.seq_len
            else None,
            "batch_fingerprints": fingerprints,
            "ranks_see_distinct_data": len(set(fingerprints)) == len(fingerprints),
        }
        if self.is_deepspeed_enabled:
            info["deepspeed_zero_stage"] = model.zero_optimization_stage()
            info["deepspeed_world_size"] = model.world_size
        if self.is_world_process_zero():
            logger.info(
                "run: %s", ", ".join(f"{k}={v}" for k, v in info.items() if k != "batch_fingerprints")
            )
            if not info["ranks_see_distinct_data"]:
                logger.error(
                    "ranks received IDENTICAL first batches %s: data is not sharded across ranks "
                    "(DeepSpeed on CPU needs use_cpu=True)",
                    fingerprints,
                )
            os.makedirs(args.output_dir, exist_ok=True)
            Path(args.output_dir, "run_info.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
        return info

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self.args.include_num_input_tokens_seen != "no":
            if self.throughput._last is None:
                self.throughput.start(self._initial_num_input_tokens_seen, now=start_time)
            logs.update(self.throughput.update(self.state.num_input_tokens_seen))
        if "eval_loss" in logs:
            logs["eval_perplexity"] = round(math.exp(min(logs["eval_loss"], 50.0)), 4)
        super().log(logs, start_time)


def setup_logging(training_args: TrainingArguments) -> None:
    """INFO on the main process, WARNING elsewhere, for python logging, transformers and datasets."""
    import datasets
    import transformers

    level = logging.INFO if training_args.should_log else logging.WARNING
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S", level=level
    )
    logging.getLogger("mini_lm").setLevel(level)
    # transformers at INFO dumps every config; its warnings and the Trainer progress bars remain.
    transformers.utils.logging.set_verbosity(logging.WARNING)
    datasets.utils.logging.set_verbosity(logging.WARNING)


def configure_reporting(args: TrainingArguments) -> None:
    """W&B offline when no credentials are around; its files go under output_dir."""
    report_to = args.report_to if isinstance(args.report_to, list) else [args.report_to]
    if "wandb" not in report_to:
        return
    if "WANDB_MODE" not in os.environ and not _has_wandb_credentials():
        os.environ["WANDB_MODE"] = "offline"
        logger.info("W&B: no API key found, logging offline (sync later with `wandb sync`)")
    for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        os.environ.setdefault(var, str(Path(args.output_dir).resolve()))
    os.environ.setdefault("WANDB_PROJECT", "mini_lm")


def _has_wandb_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    return netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore")


def prepare_run_dir(args: TrainingArguments) -> str | None:
    """Decide how the run starts, before any data or model work (mini_lm/checkpoints.py): the
    checkpoint it resumes from (None: from scratch), a refusal of an output_dir that holds a run,
    or the previous run moved aside. The main process acts first, the others then read the same
    dir; a second call (``run_training`` makes one) changes nothing."""
    if getattr(args, _PREPARED, False):
        return args.resume_from_checkpoint
    with args.main_process_first(local=False, desc="output dir"):
        checkpoint = choose_start(args, act=args.process_index == 0)
    setattr(args, _PREPARED, True)
    return checkpoint


_PREPARED = "_mini_lm_run_dir_prepared"


def _plain(trainer: Trainer) -> bool:
    """Weights load into ``trainer.model`` directly (no DeepSpeed / FSDP engine to build first)."""
    return not getattr(trainer, "is_deepspeed_enabled", False) and not getattr(
        trainer, "is_fsdp_enabled", False
    )


def _finish_without_training(trainer: Trainer, checkpoint: str) -> TrainOutput:
    """A resume of the run's last checkpoint: load it and run the train begin/end callbacks (the
    probe answers that checkpoint if a kill lost its answers), but train no step (see
    ``checkpoints.training_finished``). Loads as ``Trainer.train`` does before its loop."""
    trainer._load_from_checkpoint(checkpoint)
    trainer.state = TrainerState.load_from_json(os.path.join(checkpoint, "trainer_state.json"))
    logger.warning(
        "step %d was the last one: no step left to train, finishing the run", trainer.state.global_step
    )
    handler, args = trainer.callback_handler, trainer.args
    trainer.control = handler.on_train_begin(args, trainer.state, trainer.control)
    trainer.control = handler.on_train_end(args, trainer.state, trainer.control)
    loss = whole_run_train_loss(trainer.state.log_history, {"train_loss": math.nan}).get(
        "train_loss", math.nan
    )
    return TrainOutput(trainer.state.global_step, loss, {"train_loss": loss})


def run_training(trainer: Trainer) -> dict[str, float]:
    """Train (resuming if asked), save the final model + tokenizer, evaluate; return metrics.

    A callback that stopped the run for a reason the user must see (``training_failure``: the
    non-finite guard's) raises it here instead of the final save. ``train_loss`` covers the
    whole run, a resumed one included (``checkpoints.whole_run_train_loss``)."""
    args = trainer.args
    checkpoint = prepare_run_dir(args)
    if checkpoint is not None and training_finished(checkpoint, args.max_steps) and _plain(trainer):
        result = _finish_without_training(trainer, checkpoint)
    else:
        result = trainer.train(resume_from_checkpoint=checkpoint)
    for callback in trainer.callback_handler.callbacks:
        failure = getattr(callback, "training_failure", None)  # e.g. NonFiniteGuard's: no final save
        if failure is not None:
            raise failure
    trainer.save_model()  # final weights + tokenizer (processing_class) into output_dir
    metrics = {**result.metrics, **whole_run_train_loss(trainer.state.log_history, result.metrics)}
    trainer.log_metrics("train", metrics)
    trainer.save_metrics("train", metrics)
    if trainer.eval_dataset is not None:
        eval_metrics = trainer.evaluate()
        eval_metrics["eval_perplexity"] = math.exp(min(eval_metrics["eval_loss"], 50.0))
        trainer.log_metrics("eval", eval_metrics)
        trainer.save_metrics("eval", eval_metrics)
        metrics.update(eval_metrics)
    trainer.save_state()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        # Leave no process group (and its watchdog threads) for interpreter shutdown: a rank exiting with
        # one alive can abort with "terminate called without an active exception" after a good run.
        trainer.accelerator.wait_for_everyone()
        torch.distributed.destroy_process_group()
    return metrics
