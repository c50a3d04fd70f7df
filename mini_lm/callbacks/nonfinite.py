"""``NonFiniteGuard``: a NaN / inf loss or gradient stops the run at the step it happens, before
the optimizer can spread it into the weights; nothing non-finite is ever saved.

    add_recipe_callbacks(trainer, probe_args)      # adds it (right after DefaultFlowCallback)
    run_training(trainer)                          # raises NonFiniteError when it stopped the run

It uses only the callback API and the Trainer's public state, so any Trainer (the HF Trainer,
TRL's) can carry it. Per optimizer step:

- plain / DDP / FSDP: in ``on_pre_optimizer_step`` (gradients clipped, optimizer not yet run) it
  checks that the gradients are finite and all ranks agree (one all-reduce of a flag). A bad
  step's gradients are dropped (``grad = None``), so ``optimizer.step()`` leaves the weights *and*
  the optimizer state untouched: no moment, no step count, no weight decay sees the bad batch.
  The learning-rate schedule still advances with ``global_step``. That is what "skip" means.
- DeepSpeed: the engine has already stepped inside backward, and skips a step whose gradient norm
  is not finite by itself (``optimizer.step_was_skipped``, agreed across ranks); the guard reads that.
- fp16 loss scaling skips overflowing steps as part of its job: those are not errors. A
  non-finite *loss* is, and shows in the logged loss.
- Backstop: before each save and at the end of training the weights are checked (all ranks), so
  a setup whose optimizer does not skip (e.g. DeepSpeed bf16) still never saves NaN.

A bad step makes the Trainer log that step (its loss and grad norm). Then, by default, the run
stops: no save or eval at that step, ``failure`` says why (the step, which value, the last good
checkpoint, the usual fixes) and ``run_training`` raises it as ``NonFiniteError`` (exit code 3)
instead of saving a final model. With ``max_skips`` N, up to N bad steps are skipped (counted over
the whole run, a resume included; each is marked ``nonfinite_step_skipped`` in the log history).

Logged losses: the Trainer's ``logging_nan_inf_filter`` (on by default) keeps a NaN out of its
running loss, which is right (with it off, one NaN makes every later logged loss NaN: the sum is
reset by subtracting itself), but stands in a running sum that is 0 right after a log: the
observed ``'loss': '0'``. At such a step the guard, which runs before the loggers, logs nan instead.
"""

from __future__ import annotations

import logging
import math

import torch
import torch.distributed as dist
from transformers import TrainerCallback

from ..checkpoints import newest_complete
from ..errors import UserError

logger = logging.getLogger(__name__)

SKIPPED_KEY = "nonfinite_step_skipped"


class NonFiniteError(UserError):
    """Training produced a non-finite loss, gradient or weight; nothing of that step was saved."""

    exit_code = 3


class NonFiniteGuard(TrainerCallback):
    def __init__(self, max_skips: int = 0):
        self.max_skips = max_skips
        self.skipped: list[int] = []  # steps skipped over the whole run
        self.failure: str | None = None  # why the run stopped (run_training raises it)
        self._bad_step: int | None = None  # the optimizer step whose gradients were not finite
        self._stop: dict | None = None  # what stopped the run, for the message
        self._last_logged = 0  # step of the Trainer's previous training-loss log

    @property
    def training_failure(self) -> NonFiniteError | None:
        """What ``run_training`` raises after ``train()`` returns (None: the run went well)."""
        return NonFiniteError(self.failure) if self.failure else None

    # ------------------------------------------------------------------ per step

    def on_train_begin(self, args, state, control, **kwargs):
        # A resumed run's history (the checkpoint's) still holds the skips before it.
        self.skipped = [h["step"] for h in state.log_history if h.get(SKIPPED_KEY)]
        self.failure = self._bad_step = self._stop = None
        self._last_logged = state.global_step

    def on_pre_optimizer_step(self, args, state, control, model=None, optimizer=None, **kwargs):
        if args.fp16 or _is_deepspeed(optimizer) or model is None:
            return
        params = [p for p in model.parameters() if p.grad is not None]
        norm = torch.nn.utils.get_total_norm([p.grad for p in params]) if params else torch.zeros(())
        if _any_rank(not bool(torch.isfinite(norm).item()), args.device):
            for p in params:
                p.grad = None  # optimizer.step() now updates nothing: weights and its state stay
            self._bad_step = state.global_step + 1

    def on_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
        if not args.fp16 and _is_deepspeed(optimizer) and optimizer.step_was_skipped:
            self._bad_step = state.global_step + 1  # DeepSpeed skipped it: its gradient norm was not finite

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self._bad_step == state.global_step:
            control.should_log = True  # the Trainer logs this step's loss and grad norm (on_log)
            self._skip_or_stop(args, state, control, "the gradient norm is not finite")
        elif control.should_save and not _weights_finite(model, args.device):
            self._stop_run(args, state, control, "the weights are not finite")

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is None or "loss" not in logs:
            return
        step, first = state.global_step, self._last_logged + 1
        self._last_logged = step
        if step == self._bad_step == first and logs["loss"] == 0 and args.logging_nan_inf_filter:
            # The filter's stand-in for a non-finite loss in a one-step window is 0: log what it was.
            logs["loss"] = state.log_history[-1]["loss"] = float("nan")
        values = _describe(logs, first, step)
        if step == self._bad_step:
            if step in self.skipped:
                state.log_history[-1][SKIPPED_KEY] = 1
                logger.warning(
                    "step %d skipped: %s (%d of max_nonfinite_skips=%d)",
                    step,
                    values,
                    len(self.skipped),
                    self.max_skips,
                )
            elif self._stop is not None:
                self._stop["what"] = values
                self.failure = _message(args, **self._stop)
        elif not math.isfinite(logs["loss"]) and self._stop is None:
            # Not seen in the gradients (fp16: loss scaling skipped those steps); the loss says it.
            self._bad_step = step
            self._skip_or_stop(args, state, control, values)
            if step in self.skipped:
                state.log_history[-1][SKIPPED_KEY] = 1

    def on_epoch_end(self, args, state, control, **kwargs):
        if self._stop is not None:
            control.should_save = control.should_evaluate = False

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if self._stop is None and not _weights_finite(model, args.device):
            self._stop_run(args, state, control, "the weights are not finite at the end of training")
        if self.skipped:
            logger.warning("%d non-finite steps were skipped: %s", len(self.skipped), self.skipped)

    # ------------------------------------------------------------------ decisions

    def _skip_or_stop(self, args, state, control, what: str) -> None:
        if state.global_step in self.skipped:
            return
        if len(self.skipped) < self.max_skips:
            self.skipped.append(state.global_step)
            return
        self._stop_run(args, state, control, what)

    def _stop_run(self, args, state, control, what: str) -> None:
        control.should_training_stop = True
        control.should_save = control.should_evaluate = False
        last, _ = newest_complete(args.output_dir)
        self._stop = {"step": state.global_step, "what": what, "last": last, "skipped": self.skipped[:]}
        self.failure = _message(args, **self._stop)


def _message(args, step: int, what: str, last, skipped: list[int]) -> str:
    good = f"the last good checkpoint is {last}" if last else "no checkpoint was saved before it"
    limit = f" ({len(skipped)} bad steps skipped before it, the max_nonfinite_skips)" if skipped else ""
    warmup = f"warmup_steps, now {args.warmup_steps:g}" + (
        f", warmup_ratio {args.warmup_ratio:g}" if getattr(args, "warmup_ratio", None) else ""
    )
    precision = (
        "bf16 rather than fp16 (this run: " + ("fp16" if args.fp16 else "bf16" if args.bf16 else "fp32") + ")"
    )
    return (
        f"training stopped at step {step}: {what}{limit}; nothing of this step was saved and {good}. "
        f"Usual fixes: a lower learning_rate (now {args.learning_rate:g}), a warmup ({warmup}), "
        f"{precision}, gradient clipping (max_grad_norm, now {args.max_grad_norm:g}); then resume with "
        "--resume_from_checkpoint last, or set max_nonfinite_skips N to skip up to N such steps"
    )


def _describe(logs: dict, first: int | None = None, last: int | None = None) -> str:
    """'the loss is nan, the gradient norm is inf' / 'the gradient norm is nan (loss 7.12)'; the
    logged loss is the mean over steps ``first``..``last`` when they differ."""
    loss, norm = logs.get("loss"), logs.get("grad_norm")
    bad = []
    if loss is not None and not math.isfinite(loss):
        bad.append(f"the loss is {loss}")
    if norm is not None and not math.isfinite(norm):
        bad.append(f"the gradient norm is {norm}")
    if not bad:
        return "the gradient norm is not finite"
    span = (
        f" (mean of steps {first}-{last})" if first is not None and last is not None and first < last else ""
    )
    finite = [
        f"{name} {value:.4g}"
        for name, value in ((f"loss{span}", loss), ("grad norm", norm))
        if value is not None and math.isfinite(value)
    ]
    return ", ".join(bad) + (f" ({', '.join(finite)})" if finite else "")


def _is_deepspeed(optimizer) -> bool:
    try:
        from accelerate.utils import DeepSpeedOptimizerWrapper
    except ImportError:
        return False
    return isinstance(optimizer, DeepSpeedOptimizerWrapper)


def _any_rank(flag: bool, device) -> bool:
    """True on every rank when it is True on any (one all-reduce of a byte)."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return flag
    value = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def _weights_finite(model, device) -> bool:
    """Every trainable weight finite, on every rank (ZeRO-3 holds a shard in ``ds_tensor``)."""
    if model is None:
        return True
    finite = all(
        bool(torch.isfinite(getattr(p, "ds_tensor", p)).all()) for p in model.parameters() if p.requires_grad
    )
    return not _any_rank(not finite, device)
