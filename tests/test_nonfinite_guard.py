"""NonFiniteGuard (mini_lm/callbacks/nonfinite.py): a NaN/inf loss or gradient stops the run at the
step it happens, or (max_nonfinite_skips) is skipped without touching weights or optimizer state;
nothing non-finite is saved, and a NaN is never logged as loss 0. Plain ``transformers.Trainer``
here on purpose: the guard works with any Trainer."""

import json
import math

import pytest
import torch
from datasets import Dataset
from safetensors.torch import load_file
from transformers import Qwen2Config, Qwen2ForCausalLM, Trainer, TrainerCallback, TrainingArguments

from mini_lm.callbacks import NonFiniteError, NonFiniteGuard, add_recipe_callbacks
from mini_lm.data.synthetic import write_world
from mini_lm.errors import run_main
from mini_lm.training import run_training

from .conftest import REPO

PRETRAIN = REPO / "recipes/pretrain.py"
TINY = [
    "--model_family", "qwen2", "--hidden_size", "32", "--num_hidden_layers", "2",
    "--num_attention_heads", "4", "--max_position_embeddings", "64", "--block_size", "32",
    "--tokenizer_vocab_size", "320", "--per_device_train_batch_size", "4", "--disable_tqdm", "true",
    "--report_to", "none", "--eval_strategy", "no", "--probe", "false",
]  # fmt: skip


class PoisonSteps(TrainerCallback):
    """Makes the forward pass of the given optimizer steps produce NaN (embedding output x NaN)."""

    def __init__(self, model, steps):
        self.steps, self.current = set(steps), 0
        model.get_input_embeddings().register_forward_hook(self._hook)

    def _hook(self, module, inputs, output):
        return output * float("nan") if self.current in self.steps and module.training else output

    def on_step_begin(self, args, state, control, **kwargs):
        self.current = state.global_step + 1


class Snapshots(TrainerCallback):
    """Weights and optimizer state after every optimizer step."""

    def __init__(self):
        self.after = {}

    def on_step_end(self, args, state, control, model=None, optimizer=None, **kwargs):
        moments = {
            k: {n: v.clone() if torch.is_tensor(v) else v for n, v in s.items()}
            for k, s in optimizer.state_dict()["state"].items()
        }
        weights = {n: p.detach().clone() for n, p in model.named_parameters()}
        self.after[state.global_step] = (weights, moments)


def tiny_trainer(tmp_path, poison=(), guard=True, max_skips=0, **overrides):
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32,
    )  # fmt: skip
    model = Qwen2ForCausalLM(config)
    rows = torch.randint(0, 64, (64, 16), generator=torch.Generator().manual_seed(0))
    data = Dataset.from_dict({"input_ids": rows.tolist(), "labels": rows.tolist()})
    settings = dict(
        output_dir=str(tmp_path / "run"), max_steps=8, per_device_train_batch_size=4, learning_rate=1e-3,
        logging_steps=1, save_strategy="steps", save_steps=2, report_to="none", use_cpu=True,
        disable_tqdm=True, seed=0, max_nonfinite_skips=max_skips,
    )  # fmt: skip
    settings.update(overrides)
    from mini_lm.config import MiniLMTrainingArguments

    args = (
        MiniLMTrainingArguments(**settings)
        if guard
        else TrainingArguments(**{k: v for k, v in settings.items() if k != "max_nonfinite_skips"})
    )
    trainer = Trainer(model=model, args=args, train_dataset=data)
    trainer.add_callback(PoisonSteps(model, poison))
    snapshots = Snapshots()
    trainer.add_callback(snapshots)
    if guard:
        add_recipe_callbacks(trainer)
    return trainer, snapshots


def history(trainer) -> dict[int, dict]:
    return {h["step"]: h for h in trainer.state.log_history if "loss" in h}


def saved_tensors(run_dir):
    for path in sorted(run_dir.rglob("*.safetensors")):
        yield path, load_file(path)


def test_without_the_guard_a_nan_step_poisons_the_weights_and_is_logged_as_zero(tmp_path):
    """The negative control, and the observed bug: HF's own behaviour."""
    trainer, _ = tiny_trainer(tmp_path, poison=[3], guard=False)
    trainer.train()
    logs = history(trainer)
    assert logs[3]["loss"] == 0.0 and math.isnan(logs[3]["grad_norm"])  # 'loss': '0' for a NaN
    assert all(math.isnan(logs[s]["grad_norm"]) for s in range(3, 9))  # the weights are NaN from then on
    assert any(not torch.isfinite(t).all() for _, ts in saved_tensors(tmp_path / "run") for t in ts.values())


def test_a_nan_step_stops_the_run_there_and_nothing_of_it_is_saved(tmp_path):
    trainer, snapshots = tiny_trainer(tmp_path, poison=[5])
    with pytest.raises(NonFiniteError) as raised:
        run_training(trainer)
    message = str(raised.value)
    assert raised.value.exit_code == 3
    assert message.startswith("training stopped at step 5: the loss is nan, the gradient norm is nan")
    assert f"the last good checkpoint is {tmp_path / 'run' / 'checkpoint-4'}" in message
    assert "learning_rate (now 0.001)" in message and "max_grad_norm" in message and "bf16" in message
    assert trainer.state.global_step == 5
    run = tmp_path / "run"
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    assert not (run / "model.safetensors").exists()  # no final model for a failed run
    for path, tensors in saved_tensors(run):
        assert all(torch.isfinite(t).all() for t in tensors.values()), path
    # the bad step changed nothing: the weights after it are those after step 4
    weights_4, _ = snapshots.after[4]
    weights_5, _ = snapshots.after[5]
    assert all(torch.equal(weights_4[n], weights_5[n]) for n in weights_4)
    assert math.isnan(history(trainer)[5]["loss"])  # logged as nan, not 0


def test_skipping_leaves_weights_and_optimizer_state_untouched(tmp_path):
    """max_nonfinite_skips: a skipped step is as if its batch had never come: weights, Adam moments
    and step count stay (zeroing the gradients instead would still move them: momentum, decay)."""
    trainer, snapshots = tiny_trainer(tmp_path, poison=[3, 6], max_skips=2, weight_decay=0.1)
    metrics = run_training(trainer)
    guard = next(c for c in trainer.callback_handler.callbacks if isinstance(c, NonFiniteGuard))
    assert guard.skipped == [3, 6] and trainer.state.global_step == 8
    for bad in (3, 6):
        weights_before, moments_before = snapshots.after[bad - 1]
        weights_after, moments_after = snapshots.after[bad]
        assert all(torch.equal(weights_before[n], weights_after[n]) for n in weights_before)
        for key, state in moments_before.items():
            for name, value in state.items():
                assert torch.equal(torch.as_tensor(value), torch.as_tensor(moments_after[key][name])), name
        # control: the next step does move them
        weights_next, _ = snapshots.after[bad + 1]
        assert any(not torch.equal(weights_after[n], weights_next[n]) for n in weights_after)
    logs = history(trainer)
    assert [s for s, h in logs.items() if h.get("nonfinite_step_skipped")] == [3, 6]
    assert math.isnan(logs[3]["loss"]) and math.isnan(logs[6]["loss"])  # not 0
    assert all(math.isfinite(logs[s]["loss"]) for s in logs if s not in (3, 6))
    assert math.isfinite(metrics["train_loss"])
    for path, tensors in saved_tensors(tmp_path / "run"):
        assert all(torch.isfinite(t).all() for t in tensors.values()), path


def test_more_bad_steps_than_allowed_stop_the_run(tmp_path):
    trainer, _ = tiny_trainer(tmp_path, poison=[3, 6], max_skips=1)
    with pytest.raises(NonFiniteError, match=r"^training stopped at step 6: .*1 bad steps skipped before it"):
        run_training(trainer)


class PoisonWeights(TrainerCallback):
    """An optimizer that does not skip a bad step (as DeepSpeed bf16 may): NaN lands in a weight."""

    def on_optimizer_step(self, args, state, control, model=None, **kwargs):
        if state.global_step + 1 == 4:
            with torch.no_grad():
                next(model.parameters()).view(-1)[0] = float("nan")


def test_non_finite_weights_are_never_saved(tmp_path):
    trainer, _ = tiny_trainer(tmp_path)
    trainer.add_callback(PoisonWeights())
    with pytest.raises(NonFiniteError, match="^training stopped at step 4: the weights are not finite"):
        run_training(trainer)
    assert sorted(p.name for p in (tmp_path / "run").glob("checkpoint-*")) == ["checkpoint-2"]


@pytest.fixture(scope="module")
def bios(tmp_path_factory) -> str:
    return str(write_world(tmp_path_factory.mktemp("world"), seed=0, n_people=30, bios_per_person=2)["bios"])


def test_a_diverging_recipe_run_exits_non_zero_with_one_line_and_writes_no_nan(bios, tmp_path, capsys):
    """The observed case, tiny: lr 1e3 without warmup used to save NaN checkpoints and exit 0.
    (run_main is what ``python recipes/pretrain.py`` exits with; tests/test_user_errors.py runs it
    as a process.)"""
    out = tmp_path / "run"
    argv = [*TINY, "--train_files", bios, "--output_dir", str(out), "--learning_rate", "1e3"]
    argv += ["--warmup_steps", "0", "--max_steps", "30", "--save_steps", "1", "--logging_steps", "1"]
    assert run_main(recipe_main(), argv) == 3
    err = capsys.readouterr().err
    (last,) = [line for line in err.splitlines() if line.startswith("error:")]
    assert last.startswith("error: training stopped at step ") and "Traceback" not in err
    step = int(last.split("step ")[1].split(":")[0])
    assert f"last good checkpoint is {out / f'checkpoint-{step - 1}'}" in last
    assert not (out / f"checkpoint-{step}").exists() and not (out / "model.safetensors").exists()
    for path, tensors in saved_tensors(out):
        assert all(torch.isfinite(t).all() for t in tensors.values()), path
    state = json.loads((out / f"checkpoint-{step - 1}" / "trainer_state.json").read_text())
    assert all(h["loss"] != 0 for h in state["log_history"] if "loss" in h)


def recipe_main():
    import importlib.util

    spec = importlib.util.spec_from_file_location("pretrain_guard_recipe", PRETRAIN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main
