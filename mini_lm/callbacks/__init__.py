"""Trainer callbacks a recipe adds: the non-finite guard, the checkpoint seal, the checkpoint probe.

trainer = MiniLMTrainer(...)
add_recipe_callbacks(trainer, probe_args)
"""

from __future__ import annotations

import logging

from transformers.trainer_callback import DefaultFlowCallback

from ..config import ProbeArguments
from .nonfinite import NonFiniteError, NonFiniteGuard
from .probe import CheckpointProbe
from .seal import CheckpointSeal

logger = logging.getLogger(__name__)

__all__ = ["CheckpointProbe", "CheckpointSeal", "NonFiniteError", "NonFiniteGuard", "add_recipe_callbacks"]


def add_recipe_callbacks(trainer, probe_args: ProbeArguments | None = None) -> None:
    """Add what every recipe wants on top of the Trainer's own callbacks, for any Trainer:

    - ``NonFiniteGuard`` (always; ``max_nonfinite_skips`` of the training arguments), right after
      the Trainer's ``DefaultFlowCallback``: it vetoes the saves that callback asks for, and it
      sees each log before the loggers do;
    - ``CheckpointSeal`` (always): a checkpoint counts for ``--resume_from_checkpoint last`` only
      once sealed; it comes before the probe so a kill while probing finds the checkpoint sealed;
    - ``CheckpointProbe`` unless ``probe: false``. Questions and decoding settings are checked
      here, so a bad probe file fails before training.
    """
    guard = NonFiniteGuard(max_skips=getattr(trainer.args, "max_nonfinite_skips", 0))
    callbacks = trainer.callback_handler.callbacks
    flow = next(
        (i for i, c in enumerate(callbacks) if isinstance(c, DefaultFlowCallback)), len(callbacks) - 1
    )
    callbacks.insert(flow + 1, guard)
    trainer.add_callback(CheckpointSeal())
    if probe_args is None or not probe_args.probe:
        return
    if trainer.args.save_strategy == "no":
        logger.warning("probe is on but save_strategy=no: no checkpoint will be written, so none is probed")
        return
    trainer.add_callback(CheckpointProbe(trainer, probe_args))
