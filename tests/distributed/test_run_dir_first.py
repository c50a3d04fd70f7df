"""Two nodes on one filesystem (one process each, RANK 0 and 1, both LOCAL_RANK 0) train the run's
tokenizer into the same output_dir. ``main_process_first`` lets each node's main process write it
at once (CI saw a torn tokenizer_config.json in the two-node DeepSpeed test); ``run_dir_first``
makes node 1 wait and reuse node 0's tokenizer. The negative control runs the same workers with
``main_process_first``: node 1 then finds nothing and trains its own."""

import subprocess
import sys

import pytest

from ..conftest import REPO
from ..launch_helpers import free_port
from .conftest import VENV_PATH

pytestmark = [pytest.mark.distributed]
WORKER = REPO / "tests/distributed/run_dir_worker.py"


def two_nodes(out, guard: str) -> list[str]:
    port = str(free_port())
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(out), guard],
            cwd=REPO,
            env={
                "PATH": VENV_PATH,
                "PYTHONPATH": str(REPO),
                "OMP_NUM_THREADS": "1",
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": port,
                "WORLD_SIZE": "2",
                "RANK": str(rank),
                "LOCAL_RANK": "0",
                "LOCAL_WORLD_SIZE": "1",
                "GROUP_RANK": str(rank),
            },
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in (0, 1)
    ]
    outputs = [proc.communicate(timeout=300)[0] for proc in procs]
    for proc, output in zip(procs, outputs):
        assert proc.returncode == 0, output[-3000:]
    return [next(line for line in output.splitlines() if line.startswith("saw ")) for output in outputs]


def test_node_1_reuses_the_tokenizer_node_0_wrote(tmp_path):
    first, second = two_nodes(tmp_path / "shared", "run_dir_first")
    assert first.startswith("saw False") and second.startswith("saw True"), (first, second)
    assert first.split()[2] == second.split()[2]  # one vocabulary


def test_negative_control_main_process_first_lets_node_1_write_at_once(tmp_path):
    _, second = two_nodes(tmp_path / "shared", "main_process_first")
    assert second.startswith("saw False"), second  # it did not wait: both wrote the same files
