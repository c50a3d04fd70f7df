"""Ranks waiting for rank 0 without tripping the training process group's timeout."""

from __future__ import annotations

from datetime import timedelta

import torch.distributed as dist


class WaitingRoom:
    """Where ranks wait for rank 0: a gloo group with its own timeout (collective to create).

    The training group's timeout (NCCL 10 min, gloo 30 min, ``ddp_timeout``) fits a collective
    between steps, not a barrier held while rank 0 generates for minutes. Gloo, so waiting costs
    no GPU and works whatever the training backend is.
    """

    def __init__(self, timeout: timedelta):
        distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        self.group = dist.new_group(backend="gloo", timeout=timeout) if distributed else None

    def share(self, value):
        """Rank 0's ``value`` on every rank; the others block here until rank 0 arrives."""
        if self.group is None:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0, group=self.group)
        return box[0]
