"""Trainer callbacks every recipe adds, by one call, to any Trainer (HF ``Trainer``, TRL's ``DPOTrainer``
or ``SFTTrainer``): throughput / MFU / eval perplexity, the run card, and the checkpoint probe.

trainer = Trainer(...)                       # or DPOTrainer(...), SFTTrainer(...)
add_recipe_callbacks(trainer, probe_args, TrainingShape(seq_len=512))
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from transformers import TrainerCallback
from transformers.trainer_callback import DefaultFlowCallback

from ..config import ProbeArguments
from .instrumentation import RunCard, Throughput, TrainingShape, preference_shape
from .probe import CheckpointProbe

logger = logging.getLogger(__name__)

__all__ = [
    "INSTRUMENTATION",
    "CheckpointProbe",
    "RunCard",
    "Throughput",
    "TrainingShape",
    "add_recipe_callbacks",
    "preference_shape",
]

# What every run gets, in this order, right after the Trainer's DefaultFlowCallback and ahead of its
# reporters: what they add to a log is reported, and a callback here may veto the saves and stops
# DefaultFlowCallback asks for. A factory ``(trainer, shape) -> callback | None`` returns None where
# its callback does not apply. The non-finite guard (branch i12t, mini_lm/callbacks/nonfinite.py, not
# merged yet) plugs in as the FIRST entry, so it vetoes saves before anything else sees the step:
#   def nonfinite_guard(trainer, shape):
#       return NonFiniteGuard(max_skips=getattr(trainer.args, "max_nonfinite_skips", 0))
#   INSTRUMENTATION = [nonfinite_guard, Throughput, RunCard]
# (its CheckpointSeal goes through trainer.add_callback in add_recipe_callbacks, before the probe).
INSTRUMENTATION: list[Callable[..., TrainerCallback | None]] = [Throughput, RunCard]


def add_recipe_callbacks(
    trainer, probe_args: ProbeArguments | None = None, shape: TrainingShape | None = None
) -> None:
    """Add what every recipe wants on top of the Trainer's own callbacks: the ``INSTRUMENTATION``
    (right after DefaultFlowCallback, before the reporters) and the checkpoint probes unless disabled.

    Questions and decoding settings are checked here, so a bad probe file fails before training.
    """
    shape = shape or TrainingShape()
    added = [cb for factory in INSTRUMENTATION if (cb := factory(trainer, shape)) is not None]
    # CallbackHandler only appends; its list is public, and the order is what the reporters see.
    callbacks = trainer.callback_handler.callbacks
    flow = next((i + 1 for i, c in enumerate(callbacks) if isinstance(c, DefaultFlowCallback)), 0)
    callbacks[flow:flow] = added
    if probe_args is None or not probe_args.probe:
        return
    if trainer.args.save_strategy == "no":
        logger.warning("probe is on but save_strategy=no: no checkpoint will be written, so none is probed")
        return
    trainer.add_callback(CheckpointProbe(trainer, probe_args))
