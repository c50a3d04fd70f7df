"""Two "nodes" on one machine: two launcher invocations, node ranks 0 and 1, rendezvous on the
loopback address, one process per node, over gloo. Through the repository's own multi-node
entry points: launch/deepspeed_multinode.sh (no-ssh mode) and launch/slurm_multinode.sbatch
(LAUNCHER=accelerate, i.e. launch/accelerate_multinode.yaml), with srun/scontrol stood in for."""

import pytest

from ..conftest import REPO
from ..launch_helpers import fake_slurm_env, free_port
from .conftest import LOSS_TOLERANCE, VENV_PATH, finish, losses, max_loss_diff, recipe_args, run_info, start

pytestmark = [pytest.mark.distributed, pytest.mark.slow]


def check_two_node_zero2(out, reference) -> None:
    info = run_info(out)
    assert info["world_size"] == 2 and info["deepspeed_zero_stage"] == 2 and info["deepspeed_world_size"] == 2
    assert info["ranks_see_distinct_data"], info["batch_fingerprints"]
    assert max_loss_diff(losses(out), reference["same"]) < LOSS_TOLERANCE


def test_deepspeed_launcher_two_nodes_without_ssh(bios, tmp_path, reference):
    out = tmp_path / "run"
    args = recipe_args(bios, out, "--save_strategy", "steps", "--save_steps", "3")
    env = {
        "HOSTFILE": "launch/hostfile.example",
        "GPUS_PER_NODE": "1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
    }
    finish(
        [
            start(
                ["bash", "launch/deepspeed_multinode.sh", "recipes/pretrain.py", *args],
                NODE_RANK=str(rank),
                **env,
            )
            for rank in (0, 1)
        ]
    )
    check_two_node_zero2(out, reference)
    assert (out / "checkpoint-3/global_step3/zero_pp_rank_1_mp_rank_00_optim_states.pt").is_file()
    assert (out / "checkpoint-6/model.safetensors").is_file()


def test_slurm_script_accelerate_two_nodes(bios, tmp_path, reference):
    out = tmp_path / "run"
    slurm = fake_slurm_env(tmp_path / "bin", REPO, VENV_PATH, nodelist="127.0.0.1,127.0.0.1")
    finish(
        [
            start(
                ["bash", "launch/slurm_multinode.sbatch", "recipes/pretrain.py", *recipe_args(bios, out)],
                LAUNCHER="accelerate",
                GPUS_PER_NODE="1",
                MASTER_PORT=str(free_port()),
                **slurm,
            )
        ]
    )
    check_two_node_zero2(out, reference)
