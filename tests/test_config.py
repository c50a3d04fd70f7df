from pathlib import Path

import pytest

from mini_lm.config import (
    ConfigError,
    MiniLMTrainingArguments,
    ModelArguments,
    PretrainDataArguments,
    ProbeArguments,
    expand_env,
    parse_config,
)
from mini_lm.probing import decoding_settings
from mini_lm.validation import validate

from .conftest import REPO

PRETRAIN = [ModelArguments, PretrainDataArguments, MiniLMTrainingArguments]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_yaml_fills_all_dataclasses(tmp_path):
    cfg = write(
        tmp_path,
        f"model_family: gpt2\nhidden_size: 64\ntrain_files: [a.txt, b.txt]\n"
        f"block_size: 32\noutput_dir: {tmp_path}/out\nlearning_rate: 1e-3\nbf16: false\n",
    )
    model, data, train = parse_config(PRETRAIN, ["--config", str(cfg)])
    assert (model.model_family, model.hidden_size) == ("gpt2", 64)
    assert data.train_files == ["a.txt", "b.txt"] and data.block_size == 32
    # PyYAML reads "1e-3" as a string; it must still arrive as a float.
    assert train.learning_rate == pytest.approx(1e-3) and isinstance(train.learning_rate, float)
    assert train.output_dir == f"{tmp_path}/out"


def test_cli_flags_override_yaml(tmp_path):
    cfg = write(tmp_path, f"hidden_size: 64\nmax_steps: 10\noutput_dir: {tmp_path}\n")
    model, _, train = parse_config(PRETRAIN, ["--config", str(cfg), "--hidden_size", "96", "--max_steps=7"])
    assert model.hidden_size == 96 and train.max_steps == 7
    _, _, train = parse_config(PRETRAIN, [f"--config={cfg}"])
    assert train.max_steps == 10


def test_unknown_yaml_key_names_key_and_file(tmp_path):
    cfg = write(tmp_path, "hidden_size: 64\nlearnig_rate: 0.1\n")
    with pytest.raises(ConfigError) as err:
        parse_config(PRETRAIN, ["--config", str(cfg)])
    message = str(err.value)
    assert "learnig_rate" in message and str(cfg) in message and "did you mean 'learning_rate'" in message


def test_unknown_cli_flag_fails(tmp_path):
    with pytest.raises(ConfigError, match=r"'--learnig_rate' \(did you mean '--learning_rate'\?\)"):
        parse_config(PRETRAIN, ["--output_dir", str(tmp_path), "--learnig_rate", "1"])


@pytest.mark.parametrize(
    "text, expected", [("- a\n- b\n", "top level must be a mapping"), ("a: [1,\n", "not valid YAML")]
)
def test_malformed_yaml(tmp_path, text, expected):
    with pytest.raises(ConfigError, match=expected):
        parse_config(PRETRAIN, ["--config", str(write(tmp_path, text))])


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        parse_config(PRETRAIN, ["--config", str(tmp_path / "nope.yaml")])


def test_env_expansion(monkeypatch):
    monkeypatch.setenv("MINI_LM_T", "/data")
    assert expand_env("${MINI_LM_T}/zh") == "/data/zh"
    assert expand_env(["${MINI_LM_UNSET_X:-../d}/a"]) == ["../d/a"]
    with pytest.raises(ConfigError, match="MINI_LM_UNSET_X"):
        expand_env("${MINI_LM_UNSET_X}")


def test_cpu_forces_use_cpu(tmp_path):
    # Without CUDA, use_cpu=True keeps DeepSpeed's batch bookkeeping right on CPU ranks.
    import torch

    (train,) = parse_config([MiniLMTrainingArguments], ["--output_dir", str(tmp_path)])
    assert train.use_cpu is (not torch.cuda.is_available())


PRETRAIN_CONFIGS = sorted(REPO.glob("recipes/configs/*/pretrain_*.yaml")) + [
    REPO / "recipes/configs/quickstart/pretrain.yaml"
]


@pytest.mark.parametrize("path", PRETRAIN_CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_pretrain_config_parses_and_is_consistent(path, tmp_path):
    model, data, train, probe = parse_config(
        [*PRETRAIN, ProbeArguments],
        ["--config", str(path), "--output_dir", str(tmp_path), "--bf16", "false", "--deepspeed", ""],
    )
    validate((model, data, train, probe), files=False)  # runs/quickstart/world/... is written later
    decoding_settings(probe)  # the recipe's probe settings are valid
    assert model.model_family in ("gpt2", "qwen2")
    assert data.train_files


def test_qwen25_recipe_matches_the_real_config(shared_data):
    import json

    real = json.loads((shared_data / "tokenizers/qwen2.5/config.json").read_text())
    model, _, _ = parse_config(
        PRETRAIN,
        [
            "--config",
            str(REPO / "recipes/configs/qwen2/pretrain_qwen2.5_0.5b.yaml"),
            "--bf16",
            "false",
            "--deepspeed",
            "",
        ],
    )
    for ours, theirs in [
        ("hidden_size", "hidden_size"),
        ("num_hidden_layers", "num_hidden_layers"),
        ("num_attention_heads", "num_attention_heads"),
        ("num_key_value_heads", "num_key_value_heads"),
        ("intermediate_size", "intermediate_size"),
        ("rope_theta", "rope_theta"),
        ("tie_word_embeddings", "tie_word_embeddings"),
        ("rms_norm_eps", "rms_norm_eps"),
        ("max_position_embeddings", "max_position_embeddings"),
    ]:
        assert getattr(model, ours) == real[theirs], ours


@pytest.mark.parametrize(
    "text, message",
    [
        ("hidden_size: 64\nblock_size: 32\nhidden_size: 32\n", r":3: key 'hidden_size' is given twice \(also on line 1\)"),
        ("hidden_size: [64]\n", r":1: hidden_size: expected an integer, got a list \[64\]"),
        ('block_size: 32\nlearning_rate: "abc"\n', r":2: learning_rate: expected a number, got 'abc'"),
        ("max_steps: true\n", r":1: max_steps: expected an integer, got true"),
        ("max_steps: 2.5\n", r":1: max_steps: expected an integer, got 2.5"),
        ("lr_scheduler_type: cosin\n", r":1: lr_scheduler_type: 'cosin' is not one of linear, cosine.*\(did you mean 'cosine'\?\)"),
        ("bf16: maybe\n", r":1: bf16: expected true or false, got 'maybe'"),
        ("train_files: {a: 1}\n", r":1: train_files: expected a string or a list of them, got a mapping"),
        ('train_files: ["${MINI_LM_NO_SUCH_VAR}/a.txt"]\n', r":1: train_files: environment variable MINI_LM_NO_SUCH_VAR is not set"),
    ],
)  # fmt: skip
def test_yaml_values_are_checked_naming_file_line_and_key(tmp_path, text, message):
    """Observed before: a duplicated key silently took the last value, ``hidden_size: [64]`` was a
    TypeError much later, ``learning_rate: "abc"`` was an argparse error naming no file."""
    cfg = write(tmp_path, text)
    with pytest.raises(ConfigError, match=f"^{cfg}{message}"):
        parse_config(PRETRAIN, ["--config", str(cfg), "--output_dir", str(tmp_path)])


def test_yaml_values_are_converted_to_the_field_types(tmp_path):
    cfg = write(tmp_path, "learning_rate: 3e-4\nmax_steps: 1e3\ntrain_files: one.txt\nreport_to: none\n")
    _, data, train = parse_config(PRETRAIN, ["--config", str(cfg), "--output_dir", str(tmp_path)])
    assert train.learning_rate == 3e-4 and train.max_steps == 1000 and isinstance(train.max_steps, int)
    assert data.train_files == ["one.txt"] and train.report_to == []


def test_null_unsets_an_option_on_the_command_line(tmp_path):
    """Observed before: ``--tokenizer_vocab_size null`` -> invalid int value: 'null'."""
    cfg = write(tmp_path, "tokenizer_vocab_size: 4000\nsave_total_limit: 2\n")
    argv = ["--config", str(cfg), "--output_dir", str(tmp_path)]
    _, data, train = parse_config(
        PRETRAIN, [*argv, "--tokenizer_vocab_size", "null", "--save_total_limit", "None"]
    )
    assert data.tokenizer_vocab_size is None and train.save_total_limit is None
    with pytest.raises(
        ConfigError, match="^command line: argument --tokenizer_vocab_size.*invalid int value: 'x'"
    ):
        parse_config(PRETRAIN, [*argv, "--tokenizer_vocab_size", "x"])
    _, _, train = parse_config(PRETRAIN, [*argv, "--report_to", "none"])
    assert train.report_to == []  # "none" keeps its meaning for report_to (no reporter), not None (all)


def test_report_to_takes_several_values_space_or_comma_separated(tmp_path):
    """Observed before: ``--report_to wandb tensorboard`` -> unknown command-line argument 'tensorboard'."""
    argv = ["--output_dir", str(tmp_path), "--report_to"]
    for values in (["wandb", "tensorboard"], ["wandb,tensorboard"]):
        _, _, train = parse_config(PRETRAIN, [*argv, *values])
        assert train.report_to == ["wandb", "tensorboard"]
