"""``CheckpointSeal``: a checkpoint counts once sealed (mini_lm/checkpoints.py says why and how).

It also makes the Trainer log the training loss at every save and at the last step, so each
checkpoint's ``trainer_state.json`` covers every step up to it and a resumed run's
``train_loss`` (``checkpoints.run_train_loss``) covers the whole run, not only the resumed part.
"""

from __future__ import annotations

from pathlib import Path

import torch.distributed as dist
from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from ..checkpoints import seal_checkpoint


class CheckpointSeal(TrainerCallback):
    """Seal ``checkpoint-N`` in ``on_save`` once every rank is done writing it. Add it before any
    callback that works in ``on_save`` (the probes), so a kill during their work finds it sealed."""

    def on_step_end(self, args, state, control, **kwargs):
        if control.should_save or state.global_step >= state.max_steps:
            control.should_log = True

    def on_save(self, args, state, control, **kwargs):
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.barrier()  # every rank has returned from the Trainer's save: its shards are written
        writer = state.is_local_process_zero if args.save_on_each_node else state.is_world_process_zero
        if writer:
            seal_checkpoint(Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}")
