"""Real multi-process runs of recipes/pretrain.py on CPU (gloo): DDP via torchrun and accelerate,
and DeepSpeed ZeRO-2. Each run writes run_info.json (rank 0) with what every rank saw."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM

from mini_lm.data.synthetic import write_world

from ..conftest import REPO

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

TINY = ["--model_family", "qwen2", "--hidden_size", "32", "--num_hidden_layers", "2", "--num_attention_heads", "4",
        "--max_position_embeddings", "64", "--block_size", "32", "--tokenizer_vocab_size", "320",
        "--per_device_train_batch_size", "4", "--max_steps", "6", "--logging_steps", "2", "--disable_tqdm", "true",
        "--report_to", "none", "--save_strategy", "no", "--eval_strategy", "steps", "--eval_steps", "6"]


@pytest.fixture(scope="module")
def bios(tmp_path_factory) -> str:
    return str(write_world(tmp_path_factory.mktemp("world"), seed=0, n_people=30, bios_per_person=2)["bios"])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(launcher: list[str], recipe_args: list[str], out: Path) -> dict:
    cmd = [*launcher, str(REPO / "recipes/pretrain.py"), *recipe_args, "--output_dir", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-6000:]}"
    assert (out / "model.safetensors").is_file()
    AutoModelForCausalLM.from_pretrained(out)  # the final model is a loadable checkpoint
    return json.loads((out / "run_info.json").read_text())


TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def test_ddp_torchrun_two_processes_shard_data(bios, tmp_path):
    info = launch(TORCHRUN, [*TINY, "--train_files", bios], tmp_path / "ddp")
    assert info["world_size"] == 2
    assert len(info["batch_fingerprints"]) == 2 and info["ranks_see_distinct_data"]
    assert info["global_batch_size"] == 8


def test_ddp_accelerate_launch_with_repo_config(bios, tmp_path):
    accelerate = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                  str(REPO / "launch/accelerate_multi_gpu.yaml"), "--num_processes", "2",
                  "--main_process_port", str(free_port())]
    info = launch(accelerate, [*TINY, "--train_files", bios], tmp_path / "acc")
    assert info["world_size"] == 2 and info["ranks_see_distinct_data"]


def test_deepspeed_zero2_two_processes(bios, tmp_path):
    info = launch(TORCHRUN, [*TINY, "--train_files", bios, "--deepspeed", str(REPO / "ds_configs/zero2.json")],
                  tmp_path / "zero2")
    assert info["deepspeed_zero_stage"] == 2 and info["deepspeed_world_size"] == 2
    assert info["ranks_see_distinct_data"], info["batch_fingerprints"]
