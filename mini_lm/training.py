"""What every recipe does around ``Trainer.train()``: logging and reporting setup, resume, save, eval.

trainer = Trainer(model=model, args=args, train_dataset=train, eval_dataset=val,
                  data_collator=collator, processing_class=tokenizer)   # any Trainer, TRL's too
add_recipe_callbacks(trainer, probe_args, TrainingShape(seq_len=512))  # tokens/s, MFU, run card, probes
run_training(trainer)
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from transformers import Trainer, TrainerState, TrainingArguments
from transformers.trainer_utils import TrainOutput

from .checkpoints import choose_start, training_finished, whole_run_train_loss

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


@contextmanager
def run_dir_first(args: TrainingArguments, desc: str) -> Iterator[None]:
    """For work that writes into ``output_dir`` (a tokenizer trained on the data): the run's main
    process first, then each node's main, then the rest. On a filesystem the nodes share, the
    others find what the first wrote and reuse it; ``main_process_first`` alone lets every node's
    main write the same files at once (a torn tokenizer_config.json). On node-local disks each
    node's main then writes its own copy while its node waits."""
    with args.main_process_first(local=False, desc=desc), args.main_process_first(local=True, desc=desc):
        yield


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


def _finish_in_the_engine(trainer: Trainer, checkpoint: str) -> TrainOutput:
    """``_finish_without_training`` under DeepSpeed / FSDP, whose checkpoint loads only into the
    engine ``train()`` builds: ``train()`` with its epochs emptied, so it loads the checkpoint, runs
    the train begin/end callbacks and trains no step (it checks max_steps only after one)."""
    if not callable(getattr(trainer, "_run_epoch", None)):  # another transformers: one step more
        logger.warning("this transformers version trains one step past max_steps when a finished run resumes")
        return trainer.train(resume_from_checkpoint=checkpoint)
    logger.warning("checkpoint %s holds the last step: no step left to train, finishing the run", checkpoint)
    trainer._run_epoch = lambda *args, **kwargs: None
    try:
        return trainer.train(resume_from_checkpoint=checkpoint)
    finally:
        del trainer._run_epoch


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
    """Train (resuming if asked), save the final model + tokenizer, evaluate; return metrics.

    A callback that stopped the run for a reason the user must see (``training_failure``: the
    non-finite guard's) raises it here instead of the final save. ``train_loss`` covers the
    whole run, a resumed one included (``checkpoints.whole_run_train_loss``)."""
    args = trainer.args
    warn_data_reuse(args, trainer.train_dataset)
    checkpoint = prepare_run_dir(args)
    if checkpoint is not None and training_finished(checkpoint, args.max_steps):
        finish = _finish_without_training if _plain(trainer) else _finish_in_the_engine
        result = finish(trainer, checkpoint)
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
