"""Trainer callbacks every recipe adds, by one call, to any Trainer (HF ``Trainer``, TRL's ``DPOTrainer``
or ``SFTTrainer``): the non-finite guard, throughput / MFU / eval perplexity, the run card, the
checkpoint seal and the checkpoint probe.

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
from .nonfinite import NonFiniteError, NonFiniteGuard
from .probe import CheckpointProbe
from .seal import CheckpointSeal

logger = logging.getLogger(__name__)

__all__ = [
    "INSTRUMENTATION",
    "CheckpointProbe",
    "CheckpointSeal",
    "NonFiniteError",
    "NonFiniteGuard",
    "RunCard",
    "Throughput",
    "TrainingShape",
    "add_recipe_callbacks",
    "preference_shape",
]


def nonfinite_guard(trainer, shape: TrainingShape) -> NonFiniteGuard:
    return NonFiniteGuard(max_skips=getattr(trainer.args, "max_nonfinite_skips", 0))


# What every run gets, in this order, right after the Trainer's DefaultFlowCallback and ahead of its
# reporters: what they add to a log is reported, and a callback here may veto the saves and stops
# DefaultFlowCallback asks for. A factory ``(trainer, shape) -> callback | None`` returns None where
# its callback does not apply. The non-finite guard comes first: it vetoes the saves of a bad step
# before anything else sees it, and sees each log before the loggers do.
INSTRUMENTATION: list[Callable[..., TrainerCallback | None]] = [nonfinite_guard, Throughput, RunCard]


def add_recipe_callbacks(
    trainer, probe_args: ProbeArguments | None = None, shape: TrainingShape | None = None
) -> None:
    """Add what every recipe wants on top of the Trainer's own callbacks, for any Trainer:

    - the ``INSTRUMENTATION`` (``NonFiniteGuard`` with ``max_nonfinite_skips`` of the training
      arguments, ``Throughput``, ``RunCard``), right after ``DefaultFlowCallback``, before the reporters;
    - ``CheckpointSeal`` (always): a checkpoint counts for ``--resume_from_checkpoint last`` only
      once sealed; it comes before the probe so a kill while probing finds the checkpoint sealed;
    - ``CheckpointProbe`` unless ``probe: false``. Questions and decoding settings are checked
      here, so a bad probe file fails before training.
    """
    shape = shape or TrainingShape()
    added = [cb for factory in INSTRUMENTATION if (cb := factory(trainer, shape)) is not None]
    # CallbackHandler only appends; its list is public, and the order is what the reporters see.
    callbacks = trainer.callback_handler.callbacks
    flow = next((i + 1 for i, c in enumerate(callbacks) if isinstance(c, DefaultFlowCallback)), 0)
    callbacks[flow:flow] = added
    trainer.add_callback(CheckpointSeal())
    if probe_args is None or not probe_args.probe:
        return
    if trainer.args.save_strategy == "no":
        logger.warning("probe is on but save_strategy=no: no checkpoint will be written, so none is probed")
        return
    trainer.add_callback(CheckpointProbe(trainer, probe_args))
