"""Worker for test_probe_multiprocess: imports only torch.distributed and mini_lm.waiting, so
spawned processes start in a second instead of importing transformers."""

import os
import time
from datetime import timedelta

import torch.distributed as dist

from mini_lm.waiting import WaitingRoom


def wait_while_rank0_works(rank: int, port: int, use_room: bool, results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2, timeout=timedelta(seconds=2))
    room = WaitingRoom(timedelta(seconds=60))
    if rank == 0:
        time.sleep(5)  # "generating" for longer than the training group's timeout
    try:
        if use_room:
            results[rank] = room.share("done" if rank == 0 else None)
        else:
            box = ["done" if rank == 0 else None]
            dist.broadcast_object_list(box, src=0)
            results[rank] = box[0]
    except RuntimeError as err:
        results[rank] = f"error: {err}"
    dist.destroy_process_group()
