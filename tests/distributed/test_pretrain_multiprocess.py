"""Real multi-process runs of recipes/pretrain.py on one CPU machine (gloo): DDP through torchrun
and accelerate, DeepSpeed ZeRO-2 (and its resume), ZeRO-3 through launch/accelerate_zero3.yaml.
Each 2-process run must shard the data (every rank a different first batch) and, where the
initial weights are the same, follow the 1-process run of the same global batch (see conftest)."""

import json
import sys

import pytest

from ..conftest import REPO, run_module_main
from ..launch_helpers import free_port
from .conftest import (
    CONTROL_MIN_DIFF,
    LOSS_TOLERANCE,
    RECIPE,
    finish,
    losses,
    max_loss_diff,
    recipe_args,
    run_info,
    start,
)

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
ACCELERATE = [sys.executable, "-m", "accelerate.commands.launch"]
ZERO2 = ["--deepspeed", str(REPO / "ds_configs/zero2.json")]


def launch(launcher: list[str], args: list[str]) -> str:
    return finish([start([*launcher, str(RECIPE), *args])])[0]


@pytest.fixture(scope="module")
def zero2(bios, tmp_path_factory):
    """ZeRO-2 over torchrun, checkpointing at step 3 (for the resume test)."""
    out = tmp_path_factory.mktemp("zero2") / "run"
    launch(TORCHRUN, recipe_args(bios, out, *ZERO2, "--save_strategy", "steps", "--save_steps", "3"))
    return out


def test_negative_control_differs_from_reference(reference):
    assert max_loss_diff(reference["same"], reference["control"]) > CONTROL_MIN_DIFF


def test_ddp_torchrun_two_processes_shard_data_and_match_one_process(bios, tmp_path, reference):
    out = tmp_path / "ddp"
    launch(TORCHRUN, recipe_args(bios, out))
    info = run_info(out)
    assert info["world_size"] == 2 and info["global_batch_size"] == 8
    assert len(info["batch_fingerprints"]) == 2 and info["ranks_see_distinct_data"]
    assert max_loss_diff(losses(out), reference["same"]) < LOSS_TOLERANCE


def test_ddp_accelerate_launch_with_repo_config(bios, tmp_path):
    out = tmp_path / "acc"
    launch(
        [
            *ACCELERATE,
            "--config_file",
            str(REPO / "launch/accelerate_multi_gpu.yaml"),
            "--num_processes",
            "2",
            "--main_process_port",
            str(free_port()),
        ],
        recipe_args(bios, out),
    )
    info = run_info(out)
    assert (
        info["world_size"] == 2
        and info["distributed_type"] == "MULTI_CPU"
        and info["ranks_see_distinct_data"]
    )


def test_deepspeed_zero2_two_processes_shard_state_and_data(zero2, reference):
    info = run_info(zero2)
    assert info["deepspeed_zero_stage"] == 2 and info["deepspeed_world_size"] == 2
    assert info["ranks_see_distinct_data"], info["batch_fingerprints"]
    # ZeRO-2: each rank saved its own half of the optimizer state
    shards = sorted(
        p.name for p in (zero2 / "checkpoint-3/global_step3").glob("zero_pp_rank_*_optim_states.pt")
    )
    assert shards == [
        "zero_pp_rank_0_mp_rank_00_optim_states.pt",
        "zero_pp_rank_1_mp_rank_00_optim_states.pt",
    ]
    assert (
        max_loss_diff(losses(zero2), reference["same"]) < LOSS_TOLERANCE
    )  # probing at each save left it alone
    # ZeRO-2 keeps whole weights on every rank: rank 0 probed each checkpoint alone, each answer once
    probes = [json.loads(line) for line in (zero2 / "probes.jsonl").read_text(encoding="utf-8").splitlines()]
    keys = [(p["step"], p["mode"], p["question_id"], p["decoding"]) for p in probes]
    assert {p["step"] for p in probes} == {3, 6} and len(keys) == len(set(keys))


def test_deepspeed_zero2_resumes_from_its_checkpoint(zero2, bios, tmp_path):
    """Steps 4-6 after resuming at checkpoint-3 (weights, ZeRO optimizer shards, scheduler, data
    position) equal the uninterrupted run's. Negative control: a run that only loads the
    checkpoint's weights (fresh optimizer and data order) does not."""
    resumed = tmp_path / "resumed"
    saving = ["--save_strategy", "steps", "--save_steps", "3"]
    launch(
        TORCHRUN,
        recipe_args(bios, resumed, *ZERO2, *saving, "--resume_from_checkpoint", str(zero2 / "checkpoint-3")),
    )
    assert run_info(resumed)["deepspeed_zero_stage"] == 2
    after = range(4, 7)
    assert max_loss_diff(losses(resumed), losses(zero2), after) < LOSS_TOLERANCE

    # Resuming the finished run's last checkpoint (a kill during the final save) trains no step more;
    # before, the engine path trained step 7 and saved checkpoint-7.
    before = losses(resumed)
    (resumed / "model.safetensors").unlink()
    launch(TORCHRUN, recipe_args(bios, resumed, *ZERO2, *saving, "--resume_from_checkpoint", "last"))
    assert [p.name for p in resumed.glob("checkpoint-*")] == ["checkpoint-6"]
    assert losses(resumed) == before and (resumed / "model.safetensors").is_file()

    weights_only = tmp_path / "weights_only"
    checkpoint = str(zero2 / "checkpoint-3")
    run_module_main(
        RECIPE,
        recipe_args(
            bios,
            weights_only,
            "--per_device_train_batch_size",
            "8",
            "--max_steps",
            "3",
            "--model_name_or_path",
            checkpoint,
            "--tokenizer_name_or_path",
            checkpoint,
        ),
    )
    restarted = {step + 3: loss for step, loss in losses(weights_only).items()}
    assert max_loss_diff(restarted, losses(zero2), after) > CONTROL_MIN_DIFF


def test_deepspeed_zero3_through_accelerate_config(bios, tmp_path):
    """launch/accelerate_zero3.yaml: stage 3 with zero3_init_flag (the model is created already
    sharded, so its random init differs from a 1-process run: no loss comparison here), and the
    saved model is whole (stage3_gather_16bit_weights_on_model_save)."""
    out = tmp_path / "zero3"
    launch(
        [
            *ACCELERATE,
            "--config_file",
            str(REPO / "launch/accelerate_zero3.yaml"),
            "--num_processes",
            "2",
            "--main_process_port",
            str(free_port()),
        ],
        recipe_args(bios, out),
    )
    info = run_info(out)
    assert (
        info["deepspeed_zero_stage"] == 3
        and info["deepspeed_world_size"] == 2
        and info["ranks_see_distinct_data"]
    )
    steps = losses(out)
    assert steps[6] < steps[1] - 0.2, steps  # it trained


def test_pinned_deepspeed_batch_that_disagrees_with_world_size_fails_at_start(bios, tmp_path):
    """train_batch_size 4 = 4 x 1 x 1 holds for one process; launched on two it must stop at
    argument parsing, naming the file, before any data is read."""
    pinned = tmp_path / "zero2_pinned.json"
    pinned.write_text(
        (REPO / "ds_configs/zero2.json")
        .read_text()
        .replace('"train_batch_size": "auto"', '"train_batch_size": 4')
    )
    proc = start([*TORCHRUN, str(RECIPE), *recipe_args(bios, tmp_path / "out", "--deepspeed", str(pinned))])
    output = proc.communicate(timeout=600)[0]
    assert proc.returncode != 0
    assert f"error: {pinned}: train_batch_size=4" in output and "x 2 processes = global batch 8" in output
    assert "train data:" not in output and not (tmp_path / "out").exists()


def failed_launch(args: list[str]) -> str:
    proc = start([*TORCHRUN, str(RECIPE), *args])
    output = proc.communicate(timeout=600)[0]
    assert proc.returncode != 0, output[-3000:]
    return output


def rank_errors(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error: ")]


def test_a_user_error_is_one_line_on_every_rank(bios, tmp_path):
    output = failed_launch(recipe_args(str(tmp_path / "nowhere.txt"), tmp_path / "out"))
    errors = rank_errors(output)
    assert len(errors) == 2 and errors[0] == errors[1] and "corpus path not found" in errors[0], output[
        -3000:
    ]
    assert "exitcode  : 2" in output and "CorpusError" not in output  # torchrun's own summary aside


def all_saved_tensors_finite(run) -> int:
    """Every tensor in every weights / optimizer file under ``run`` (DeepSpeed shards included) is
    finite; returns how many files were read."""
    import torch
    from safetensors.torch import load_file

    def tensors(obj):
        if torch.is_tensor(obj):
            yield obj
        elif isinstance(obj, dict):
            for value in obj.values():
                yield from tensors(value)
        elif isinstance(obj, (list, tuple)):
            for value in obj:
                yield from tensors(value)

    files = [*run.rglob("*.safetensors"), *run.rglob("*optim*.pt"), *run.rglob("*model_states.pt")]
    for path in files:
        content = load_file(path) if path.suffix == ".safetensors" else torch.load(path, weights_only=False)
        bad = [t for t in tensors(content) if t.is_floating_point() and not torch.isfinite(t).all()]
        assert not bad, path
    return len(files)


@pytest.mark.parametrize("engine", ["ddp", "zero2"])
def test_a_diverging_run_stops_every_rank_at_the_same_step_and_saves_nothing_non_finite(
    bios, tmp_path, engine
):
    """lr 1e3: the gradients blow up within a few steps. Every rank must stop at that step (DDP: the
    guard's all-reduced flag; ZeRO-2: DeepSpeed's own overflow skip), with the same line, exit 3."""
    out = tmp_path / engine
    extra = ["--learning_rate", "1e3", "--warmup_steps", "0", "--max_steps", "20"]
    extra += ["--save_strategy", "steps", "--save_steps", "1", *(ZERO2 if engine == "zero2" else [])]
    output = failed_launch(recipe_args(bios, out, *extra, "--probe", "false"))
    errors = rank_errors(output)
    assert len(errors) == 2 and errors[0] == errors[1], output[-3000:]
    assert errors[0].startswith("error: training stopped at step ") and "exitcode  : 3" in output
    step = int(errors[0].split("step ")[1].split(":")[0])
    assert f"the last good checkpoint is {out / f'checkpoint-{step - 1}'}" in errors[0]
    assert not (out / f"checkpoint-{step}").exists() and not (out / "model.safetensors").exists()
    assert all_saved_tensors_finite(out) >= 2
