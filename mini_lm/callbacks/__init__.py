"""Trainer callbacks a recipe adds: the checkpoint probe.

trainer = MiniLMTrainer(...)
add_recipe_callbacks(trainer, probe_args)
"""

from __future__ import annotations

import logging

from ..config import ProbeArguments
from .probe import CheckpointProbe

logger = logging.getLogger(__name__)

__all__ = ["CheckpointProbe", "add_recipe_callbacks"]


def add_recipe_callbacks(trainer, probe_args: ProbeArguments | None = None) -> None:
    """Add what every recipe wants on top of the Trainer's own callbacks (probes unless disabled).

    Questions and decoding settings are checked here, so a bad probe file fails before training.
    """
    if probe_args is None or not probe_args.probe:
        return
    if trainer.args.save_strategy == "no":
        logger.warning("probe is on but save_strategy=no: no checkpoint will be written, so none is probed")
        return
    trainer.add_callback(CheckpointProbe(trainer, probe_args))
