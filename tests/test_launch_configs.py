"""Every file in launch/ and ds_configs/ is loaded or dry-run here by the tool that will read it:
accelerate YAMLs through accelerate's own launch-argument resolution down to torchrun's launch
config (nothing is started), DeepSpeed JSONs through TrainingArguments, the hostfile through
DeepSpeed's parser, the shell scripts with DRY_RUN=1. Real multi-process runs of the same files
are in tests/distributed/."""

import json
import os
import subprocess
from pathlib import Path
from unittest import mock

import pytest

from mini_lm.config import ConfigError, MiniLMTrainingArguments

from .conftest import REPO
from .launch_helpers import fake_slurm_env, free_port

SCRIPT_ENV = {**os.environ, "PATH": f"{REPO / '.venv/bin'}:{os.environ['PATH']}"}


def accelerate_dry_run(config: str, *flags: str):
    """(torchrun LaunchConfig or None, env) that `accelerate launch --config_file config *flags
    recipes/pretrain.py` would start with, resolved by accelerate itself, without starting it."""
    import torch.distributed.run as distrib_run
    from accelerate.commands.launch import _filter_args, _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import (
        prepare_deepspeed_cmd_env,
        prepare_multi_gpu_env,
        prepare_simple_launcher_cmd_env,
    )

    argv = [
        "--config_file",
        str(REPO / config),
        "--main_process_port",
        str(free_port()),
        *flags,
        "recipes/pretrain.py",
    ]
    with mock.patch.dict(os.environ):  # torchrun's config_from_args sets OMP_NUM_THREADS=1 in this process
        args, defaults, _ = _validate_launch_command(launch_command_parser().parse_args(argv))
        if args.use_deepspeed:
            args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)
            _, env = prepare_deepspeed_cmd_env(args)
        elif args.multi_gpu:
            env = prepare_multi_gpu_env(args)
        else:
            return None, prepare_simple_launcher_cmd_env(args)[1]
        torchrun_args = _filter_args(
            args,
            distrib_run.get_args_parser(),
            ["--training_script", args.training_script, "--training_script_args", []],
        )
        return distrib_run.config_from_args(torchrun_args)[0], env


def test_accelerate_single_is_one_plain_process():
    config, env = accelerate_dry_run("launch/accelerate_single.yaml")
    assert config is None and env.get("ACCELERATE_USE_DEEPSPEED") is None
    assert env["ACCELERATE_MIXED_PRECISION"] == "no"  # precision comes from the recipe YAML


def test_accelerate_multi_gpu_is_ddp_over_one_node():
    config, env = accelerate_dry_run("launch/accelerate_multi_gpu.yaml")
    assert (config.min_nodes, config.max_nodes, config.nproc_per_node) == (1, 1, 8)
    assert env.get("ACCELERATE_USE_DEEPSPEED") is None


@pytest.mark.parametrize(
    "config, ds_json, stage, zero3_init",
    [
        ("launch/accelerate_zero2.yaml", "ds_configs/zero2.json", 2, "false"),
        ("launch/accelerate_zero3.yaml", "ds_configs/zero3.json", 3, "true"),
    ],
)
def test_accelerate_deepspeed_configs(config, ds_json, stage, zero3_init):
    launch, env = accelerate_dry_run(config)
    assert (launch.min_nodes, launch.nproc_per_node) == (1, 8)
    assert env["ACCELERATE_USE_DEEPSPEED"] == "true" and env["ACCELERATE_DEEPSPEED_CONFIG_FILE"] == ds_json
    assert json.loads((REPO / ds_json).read_text())["zero_optimization"]["stage"] == stage
    assert env.get("ACCELERATE_DEEPSPEED_ZERO3_INIT") == zero3_init


def test_accelerate_multinode_is_two_nodes_of_zero2_with_static_rendezvous():
    launch, env = accelerate_dry_run(
        "launch/accelerate_multinode.yaml", "--machine_rank", "1", "--main_process_ip", "10.1.2.3"
    )
    assert (launch.min_nodes, launch.max_nodes, launch.nproc_per_node) == (2, 2, 8)
    assert launch.rdzv_backend == "static" and launch.rdzv_configs["rank"] == 1
    assert launch.rdzv_endpoint.startswith("10.1.2.3:")
    assert env["ACCELERATE_DEEPSPEED_CONFIG_FILE"] == "ds_configs/zero2.json"


@pytest.mark.parametrize("name", ["zero2", "zero2_offload", "zero3", "zero3_offload"])
def test_deepspeed_json_loads_into_training_arguments(name, tmp_path):
    """Each JSON is valid for the HF Trainer: every "auto" is filled from TrainingArguments."""
    args = MiniLMTrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        gradient_accumulation_steps=2,
        deepspeed=str(REPO / f"ds_configs/{name}.json"),
    )
    config = args.hf_deepspeed_config.config
    assert (
        config["train_micro_batch_size_per_gpu"],
        config["gradient_accumulation_steps"],
        config["train_batch_size"],
    ) == (4, 2, 8)
    assert config["zero_optimization"]["stage"] == int(name[4])


def test_hostfile_example_parses_with_deepspeed():
    from deepspeed.launcher.runner import fetch_hostfile

    assert fetch_hostfile(str(REPO / "launch/hostfile.example")) == {"node-a": 8, "node-b": 8}


def run_script(script: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(REPO / script), *args],
        env={**SCRIPT_ENV, **env},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_deepspeed_multinode_script_pdsh_and_no_ssh_modes():
    common = {"DRY_RUN": "1", "HOSTFILE": "launch/hostfile.example"}
    pdsh = run_script("launch/deepspeed_multinode.sh", "recipes/pretrain.py", "--config", "c.yaml", **common)
    assert pdsh.returncode == 0, pdsh.stderr
    assert pdsh.stdout.split() == [
        "deepspeed",
        "--hostfile",
        "launch/hostfile.example",
        "--num_gpus",
        "8",
        "--master_addr",
        "node-a",
        "--master_port",
        "29500",
        "recipes/pretrain.py",
        "--config",
        "c.yaml",
        "--deepspeed",
        "ds_configs/zero2.json",
    ]
    per_node = run_script(
        "launch/deepspeed_multinode.sh",
        "recipes/pretrain.py",
        NODE_RANK="1",
        MASTER_ADDR="10.0.0.1",
        DS_CONFIG="ds_configs/zero2_offload.json",
        **common,
    )
    assert "--master_addr 10.0.0.1" in per_node.stdout and "--no_ssh --node_rank 1" in per_node.stdout
    assert per_node.stdout.split()[-1] == "ds_configs/zero2_offload.json"


def test_deepspeed_multinode_script_without_hostfile_says_what_to_do(tmp_path):
    result = run_script(
        "launch/deepspeed_multinode.sh", "recipes/pretrain.py", HOSTFILE=str(tmp_path / "none")
    )
    assert result.returncode == 2 and "copy launch/hostfile.example" in result.stderr


@pytest.fixture
def fake_slurm(tmp_path) -> dict:
    return fake_slurm_env(tmp_path / "slurm_bin", REPO, SCRIPT_ENV["PATH"], nodelist="gpu-a,gpu-b")


def test_slurm_script_torchrun_mode_rendezvous_at_first_node(fake_slurm):
    result = run_script(
        "launch/slurm_multinode.sbatch",
        "recipes/pretrain.py",
        "--config",
        "a b.yaml",
        DRY_RUN="1",
        **fake_slurm,
    )
    assert result.returncode == 0, result.stderr
    lines = sorted(result.stdout.splitlines())
    assert len(lines) == 2 and lines[0].startswith("node 0:") and lines[1].startswith("node 1:")
    for line in lines:
        assert (
            "torchrun --nnodes 2 --nproc_per_node 8 --rdzv_backend c10d --rdzv_endpoint gpu-a:29500 "
            "--rdzv_id 42 recipes/pretrain.py --config a b.yaml"
        ) in line


def test_slurm_script_accelerate_mode_sets_machine_rank_per_node(fake_slurm):
    result = run_script(
        "launch/slurm_multinode.sbatch",
        "recipes/pretrain.py",
        DRY_RUN="1",
        LAUNCHER="accelerate",
        GPUS_PER_NODE="4",
        **fake_slurm,
    )
    assert result.returncode == 0, result.stderr
    for node in (0, 1):
        assert (
            f"node {node}: accelerate launch --config_file launch/accelerate_multinode.yaml --num_machines 2 "
            f"--num_processes 8 --machine_rank {node} --main_process_ip gpu-a"
        ) in result.stdout


def test_slurm_script_rejects_unknown_launcher_and_missing_allocation(fake_slurm):
    bad = run_script("launch/slurm_multinode.sbatch", "recipes/pretrain.py", LAUNCHER="mpirun", **fake_slurm)
    assert bad.returncode != 0 and "LAUNCHER must be torchrun or accelerate, got 'mpirun'" in bad.stderr
    outside = run_script("launch/slurm_multinode.sbatch", "recipes/pretrain.py")
    assert outside.returncode != 0 and "not inside a SLURM allocation" in outside.stderr


def test_nccl_env_defaults_and_user_values_win():
    show = "source launch/nccl_env.sh; echo $NCCL_DEBUG $TORCH_NCCL_ASYNC_ERROR_HANDLING $OMP_NUM_THREADS"
    env = {k: v for k, v in SCRIPT_ENV.items() if k not in ("NCCL_DEBUG", "OMP_NUM_THREADS")}
    assert subprocess.run(
        ["bash", "-c", show], env=env, cwd=REPO, capture_output=True, text=True
    ).stdout.split() == ["WARN", "1", "4"]
    mine = subprocess.run(
        ["bash", "-c", show], env={**env, "NCCL_DEBUG": "INFO"}, cwd=REPO, capture_output=True, text=True
    )
    assert mine.stdout.split()[0] == "INFO"


def _pinned_json(tmp_path: Path, **values) -> str:
    path = tmp_path / "pinned.json"
    path.write_text(
        json.dumps(
            {
                "zero_optimization": {"stage": 2},
                "train_batch_size": "auto",
                "train_micro_batch_size_per_gpu": "auto",
                "gradient_accumulation_steps": "auto",
                **values,
            }
        )
    )
    return str(path)


@pytest.mark.parametrize(
    "pinned",
    [
        {},
        {"train_batch_size": 8},
        {"train_micro_batch_size_per_gpu": 4},
        {"gradient_accumulation_steps": 2, "train_batch_size": 8},
    ],
)
def test_global_batch_check_accepts_auto_and_agreeing_values(pinned, tmp_path):
    MiniLMTrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        gradient_accumulation_steps=2,
        deepspeed=_pinned_json(tmp_path, **pinned),
    )


def test_global_batch_check_names_file_values_and_arithmetic(tmp_path):
    path = _pinned_json(tmp_path, train_batch_size=32, train_micro_batch_size_per_gpu=8)
    with pytest.raises(ConfigError) as err:
        MiniLMTrainingArguments(
            output_dir=str(tmp_path),
            per_device_train_batch_size=4,
            gradient_accumulation_steps=2,
            deepspeed=path,
        )
    message = str(err.value)
    assert message.startswith(f"{path}: train_micro_batch_size_per_gpu=8, train_batch_size=32")
    assert (
        "4 x gradient_accumulation_steps 2 x 1 processes = global batch 8" in message and '"auto"' in message
    )


def test_global_batch_check_counts_the_world_size(tmp_path, monkeypatch):
    """16 = 4 x 2 x 2 holds on two processes only; on two processes 8 fails."""
    monkeypatch.setattr(MiniLMTrainingArguments, "world_size", property(lambda self: 2))
    MiniLMTrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        gradient_accumulation_steps=2,
        deepspeed=_pinned_json(tmp_path, train_batch_size=16),
    )
    with pytest.raises(ConfigError, match="x 2 processes = global batch 16"):
        MiniLMTrainingArguments(
            output_dir=str(tmp_path),
            per_device_train_batch_size=4,
            gradient_accumulation_steps=2,
            deepspeed=_pinned_json(tmp_path, train_batch_size=8),
        )


def test_global_batch_check_reads_the_accelerate_config(tmp_path, monkeypatch):
    """accelerate launch hands its DeepSpeed settings over in the environment; here a config that
    describes ZeRO-2 inline (no JSON file) and pins gradient_accumulation_steps: 4."""
    config = tmp_path / "zero2_inline.yaml"
    config.write_text(
        "distributed_type: DEEPSPEED\ndeepspeed_config:\n  zero_stage: 2\n"
        "  gradient_accumulation_steps: 4\nnum_machines: 1\nnum_processes: 2\n"
    )
    _, env = accelerate_dry_run(str(config))
    for key, value in env.items():
        if key.startswith("ACCELERATE_"):
            monkeypatch.setenv(key, value)
    MiniLMTrainingArguments(output_dir=str(tmp_path), gradient_accumulation_steps=4)
    with pytest.raises(
        ConfigError, match=r"^the accelerate config \(deepspeed_config\): gradient_accumulation_steps=4"
    ):
        MiniLMTrainingArguments(output_dir=str(tmp_path), gradient_accumulation_steps=1)


@pytest.mark.parametrize("through", ["--deepspeed", "accelerate"])
def test_unreadable_deepspeed_json_is_named(through, tmp_path, monkeypatch):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    kwargs = {"deepspeed": str(bad)} if through == "--deepspeed" else {}
    if through == "accelerate":
        monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
        monkeypatch.setenv("ACCELERATE_DEEPSPEED_CONFIG_FILE", str(bad))
    with pytest.raises(ConfigError, match="bad.json: cannot read it as JSON"):
        MiniLMTrainingArguments(output_dir=str(tmp_path), **kwargs)


def test_global_batch_check_reads_dict_and_base64_configs(tmp_path):
    import base64

    config = {"zero_optimization": {"stage": 2}, "train_batch_size": 32}
    with pytest.raises(ConfigError, match="^the deepspeed config dict: train_batch_size=32"):
        MiniLMTrainingArguments(output_dir=str(tmp_path), deepspeed=config)
    # transformers also takes base64-encoded JSON; the check leaves that to it rather than misread it
    encoded = base64.urlsafe_b64encode(json.dumps({**config, "train_batch_size": 8}).encode()).decode()
    args = MiniLMTrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=8, deepspeed=encoded)
    assert args.hf_deepspeed_config.config["train_batch_size"] == 8
