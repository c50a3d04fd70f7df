"""Shared by the multi-process tests: the tiny recipe arguments, launching and reading a run, and the
1-process reference runs every 2-process run is compared with.

Equivalence contract: with the same seed and global batch, a 2-process run (4 rows per process)
follows the 1-process run (8 rows) step by step, loss within LOSS_TOLERANCE (measured: <= 1e-6,
fp32 reduction order). The negative control, 1 process with 4 rows (another global batch), differs
by more than CONTROL_MIN_DIFF (measured: 0.11), so the comparison can fail.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM

from mini_lm.data.synthetic import write_world

from ..conftest import REPO, run_module_main

LOSS_TOLERANCE = 1e-4
CONTROL_MIN_DIFF = 1e-2

# 6 steps at a high learning rate, a loss logged every step: a run whose gradients were not
# averaged across ranks, or whose ranks saw the wrong rows, drifts away within a few steps.
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
    "64",
    "--block_size",
    "32",
    "--tokenizer_vocab_size",
    "320",
    "--per_device_train_batch_size",
    "4",
    "--max_steps",
    "6",
    "--logging_steps",
    "1",
    "--learning_rate",
    "1e-2",
    "--disable_tqdm",
    "true",
    "--report_to",
    "none",
    "--save_strategy",
    "no",
    "--eval_strategy",
    "no",
    "--probe_max_new_tokens",
    "8",
]  # runs that save also probe (built-in questions); 64 positions hold 8 new tokens
RECIPE = REPO / "recipes/pretrain.py"
VENV_PATH = f"{Path(sys.executable).parent}:{os.environ['PATH']}"  # torchrun, deepspeed, accelerate


@pytest.fixture(scope="session")
def bios(tmp_path_factory) -> str:
    return str(write_world(tmp_path_factory.mktemp("world"), seed=0, n_people=30, bios_per_person=2)["bios"])


def recipe_args(bios: str, out: Path, *extra: str) -> list[str]:
    return [*TINY, "--train_files", bios, *extra, "--output_dir", str(out)]


def start(cmd: list[str], **env: str) -> subprocess.Popen:
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "PATH": VENV_PATH, **env}
    return subprocess.Popen(
        cmd, cwd=REPO, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def finish(procs: list[subprocess.Popen], timeout: int = 600) -> list[str]:
    """Wait for all; fail with the tail of every process's output when any failed."""
    outputs = [p.communicate(timeout=timeout)[0] for p in procs]
    if any(p.returncode for p in procs):
        report = "\n".join(
            f"--- {' '.join(p.args)[:300]} (exit {p.returncode})\n{out[-5000:]}"
            for p, out in zip(procs, outputs)
        )
        pytest.fail(f"launch failed:\n{report}")
    return outputs


def run_info(out: Path) -> dict:
    """run_info.json of a finished run, after checking its final model reloads with plain transformers."""
    assert (out / "model.safetensors").is_file()
    _, loading = AutoModelForCausalLM.from_pretrained(out, output_loading_info=True)
    assert not loading["missing_keys"] and not loading["mismatched_keys"], loading
    return json.loads((out / "run_info.json").read_text())


def losses(out: Path) -> dict[int, float]:
    """{step: training loss} from trainer_state.json (a resumed run's includes the steps before)."""
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    return {h["step"]: h["loss"] for h in history if "loss" in h}


def max_loss_diff(a: dict[int, float], b: dict[int, float], steps=range(1, 7)) -> float:
    return max(abs(a[s] - b[s]) for s in steps)


@pytest.fixture(scope="session")
def reference(bios, tmp_path_factory) -> dict[str, dict[int, float]]:
    """1-process losses: "same" has the 2-process runs' global batch (8), "control" half of it."""
    base = tmp_path_factory.mktemp("reference")
    runs = {"same": "8", "control": "4"}
    for name, batch in runs.items():
        run_module_main(RECIPE, recipe_args(bios, base / name, "--per_device_train_batch_size", batch))
    return {name: losses(base / name) for name in runs}
