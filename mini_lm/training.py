"""What every recipe does around ``Trainer.train()``: logging and reporting setup, resume, save, eval.

trainer = Trainer(model=model, args=args, train_dataset=train, eval_dataset=val,
                  data_collator=collator, processing_class=tokenizer)   # any Trainer, TRL's too
add_recipe_callbacks(trainer, probe_args, TrainingShape(seq_len=512))  # tokens/s, MFU, run card, probes
run_training(trainer)
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from transformers import Trainer, TrainingArguments
from transformers.trainer_utils import get_last_checkpoint

logger = logging.getLogger(__name__)


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


def resolve_resume(args: TrainingArguments) -> str | None:
    """Checkpoint to resume from; refuse to silently mix a fresh run into an old output_dir.

    resume_from_checkpoint: "last"/"true" -> newest checkpoint-N in output_dir; a path -> that.
    """
    last = get_last_checkpoint(args.output_dir) if os.path.isdir(args.output_dir) else None
    wanted = args.resume_from_checkpoint
    if wanted is None or str(wanted).lower() in ("", "false", "none"):
        if last and not getattr(args, "overwrite_output_dir", False):
            raise FileExistsError(
                f"{args.output_dir} already holds {Path(last).name} from an earlier run: pass "
                "--resume_from_checkpoint last to continue it, --overwrite_output_dir to start over, "
                "or choose another --output_dir"
            )
        return None
    if str(wanted).lower() in ("last", "true"):
        if last is None:
            logger.info(
                "resume_from_checkpoint=last but %s has no checkpoint: starting fresh", args.output_dir
            )
        return last
    if not os.path.isdir(wanted):
        raise FileNotFoundError(f"resume_from_checkpoint: no checkpoint dir at {wanted}")
    return wanted


DATA_PASSES_WARNING = 20  # passes over the training data beyond which a model memorises it


def warn_data_reuse(args: TrainingArguments, train_dataset) -> float | None:
    """Warn when the run passes over its training data more than ``DATA_PASSES_WARNING`` times (100
    passes over 134 tokens trains, silently, a model that recites them). Returns the passes, or None
    for a stream (no length)."""
    try:
        rows = len(train_dataset)
    except TypeError:
        return None
    per_step = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
    passes = args.max_steps * per_step / max(rows, 1) if args.max_steps > 0 else args.num_train_epochs
    if passes > DATA_PASSES_WARNING:
        how = (
            f"max_steps {args.max_steps} x {per_step} rows per step"
            if args.max_steps > 0
            else f"num_train_epochs {args.num_train_epochs:g}"
        )
        logger.warning(
            "the run passes over its training data %.0f times (%s, %d rows%s): a model memorises data seen "
            "this often. If that is not the point, use more data or fewer steps",
            passes,
            how,
            rows,
            _token_note(train_dataset),
        )
    return passes


def _token_note(dataset) -> str:
    data = getattr(dataset, "data", None)
    if data is None or "input_ids" not in dataset.column_names:
        return ""
    import pyarrow.compute as pc

    return f", {pc.sum(pc.list_value_length(data.column('input_ids'))).as_py()} tokens"


def run_training(trainer: Trainer) -> dict[str, float]:
    """Train (resuming if asked), save the final model + tokenizer, evaluate; return metrics."""
    args = trainer.args
    warn_data_reuse(args, trainer.train_dataset)
    checkpoint = resolve_resume(args)
    result = trainer.train(resume_from_checkpoint=checkpoint)
    trainer.save_model()  # final weights + tokenizer (processing_class) into output_dir
    metrics = dict(result.metrics)
    trainer.log_metrics("train", metrics)
    trainer.save_metrics("train", metrics)
    if trainer.eval_dataset is not None:
        eval_metrics = trainer.evaluate()  # with eval_perplexity for LM losses (callbacks.Throughput)
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
