"""recipes/sft.py on 2 CPU processes (gloo): DDP via `accelerate launch` (the repo's MULTI_GPU config)
with packed rows, and DeepSpeed ZeRO-2 via torchrun with padded batches. Each run writes
run_info.json (rank 0) with what every rank saw."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM

from mini_lm.data.synthetic import write_world

from ..conftest import REPO
from .test_pretrain_multiprocess import free_port

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
TINY = [
    "--model_family",
    "qwen2",
    "--hidden_size",
    "32",
    "--num_hidden_layers",
    "2",
    "--num_attention_heads",
    "4",
    "--max_position_embeddings",
    "128",
    "--max_length",
    "96",
    "--tokenizer_vocab_size",
    "400",
    "--per_device_train_batch_size",
    "4",
    "--max_steps",
    "6",
    "--logging_steps",
    "2",
    "--disable_tqdm",
    "true",
    "--report_to",
    "none",
    "--save_strategy",
    "no",
    "--eval_strategy",
    "steps",
    "--eval_steps",
    "6",
    "--validation_split",
    "0.05",
    "--learning_rate",
    "1e-3",
]


@pytest.fixture(scope="module")
def qa(tmp_path_factory) -> str:
    return str(
        write_world(tmp_path_factory.mktemp("world"), seed=0, n_people=20, bios_per_person=1)["qa_sft"]
    )


def launch(launcher: list[str], extra: list[str], out: Path) -> tuple[dict, str]:
    cmd = [*launcher, str(REPO / "recipes/sft.py"), *TINY, *extra, "--output_dir", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (
        f"{' '.join(cmd)}\n--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-6000:]}"
    )
    AutoModelForCausalLM.from_pretrained(out)  # the final model is a loadable checkpoint
    return json.loads((out / "run_info.json").read_text()), proc.stdout + proc.stderr


def test_sft_ddp_accelerate_two_processes_packed(qa, tmp_path):
    accelerate = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(REPO / "launch/accelerate_multi_gpu.yaml"),
        "--num_processes",
        "2",
        "--main_process_port",
        str(free_port()),
    ]
    info, log = launch(accelerate, ["--train_files", qa, "--packing", "true"], tmp_path / "ddp")
    assert info["world_size"] == 2 and info["global_batch_size"] == 8
    assert len(info["batch_fingerprints"]) == 2 and info["ranks_see_distinct_data"]
    assert log.count("SFT label audit") == 1  # printed once, by rank 0
    assert "packed-attention check passed" in log


def test_sft_deepspeed_zero2_two_processes(qa, tmp_path):
    info, _ = launch(
        TORCHRUN,
        ["--train_files", qa, "--deepspeed", str(REPO / "ds_configs/zero2.json")],
        tmp_path / "zero2",
    )
    assert info["deepspeed_zero_stage"] == 2 and info["deepspeed_world_size"] == 2
    assert info["ranks_see_distinct_data"], info["batch_fingerprints"]
