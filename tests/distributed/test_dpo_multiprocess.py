"""recipes/dpo.py on 2 CPU processes (DDP over gloo, torchrun): TRL's DPOTrainer finishes, every rank
trains on its own pairs, and the logs carry the same keys as a 1-process run (TRL's rewards next
to the instrumentation's tokens/s)."""

import json
import sys

import pytest

from ..conftest import REPO
from ..test_dpo import make_chat_model
from .conftest import finish, run_info, start

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

TORCHRUN = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
# What a 1-process run of recipes/dpo.py logs at every training step (TRL's and mini_lm's keys).
LOGGED = {
    "loss",
    "grad_norm",
    "learning_rate",
    "epoch",
    "step",
    "entropy",
    "num_tokens",
    "mean_token_accuracy",
    "logits/chosen",
    "logits/rejected",
    "logps/chosen",
    "logps/rejected",
    "rewards/chosen",
    "rewards/rejected",
    "rewards/accuracies",
    "rewards/margins",
    "num_input_tokens_seen",
    "train_runtime",
    "train_tokens_per_second",
    "tokens_per_second",
    "tokens_per_second_per_device",
}


def test_dpo_ddp_two_processes(shared_data, tmp_path):
    model = make_chat_model(shared_data, tmp_path / "start")
    out = tmp_path / "ddp"
    cmd = [sys.executable, *TORCHRUN, str(REPO / "recipes/dpo.py")]
    cmd += ["--config", str(REPO / "recipes/configs/qwen2/dpo_tiny.yaml"), "--model_name_or_path", str(model)]
    cmd += ["--train_files", str(shared_data / "preference/dpo_zh_demo.json"), "--max_train_samples", "48"]
    cmd += ["--max_length", "64", "--per_device_train_batch_size", "4", "--max_steps", "4"]
    cmd += [
        "--logging_steps",
        "1",
        "--learning_rate",
        "1e-3",
        "--eval_strategy",
        "no",
        "--validation_split",
        "0",
    ]
    cmd += ["--save_strategy", "no", "--disable_tqdm", "true", "--output_dir", str(out)]
    (log,) = finish([start(cmd)])
    info = run_info(out)  # the final model reloads with plain transformers
    assert (
        info["trainer"] == "PreferenceTrainer" and info["world_size"] == 2 and info["global_batch_size"] == 8
    )
    assert info["ranks_see_distinct_data"], info["batch_fingerprints"]
    assert log.count("preference audit") == 1  # printed once, by rank 0
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    steps = [h for h in history if "loss" in h]
    assert len(steps) == 4 and all(set(h) == LOGGED for h in steps), [sorted(set(h) ^ LOGGED) for h in steps]
    assert (out / "README.md").is_file()
