"""mini_lm/validation.py: every recipe's arguments are checked by one list of checks, each written
once, before any data or model work."""

import pytest

from mini_lm.config import (
    MLM_ARGUMENTS,
    PRETRAIN_ARGUMENTS,
    SFT_ARGUMENTS,
    ConfigError,
    parse_config,
)
from mini_lm.validation import CHECKS, RecipeArgs, validate


def parsed(arguments, tmp_path, *flags):
    return parse_config(arguments, ["--output_dir", str(tmp_path), *flags])


@pytest.mark.parametrize(
    "flags, message",
    [
        (
            ["--block_size", "2048", "--max_position_embeddings", "1024"],
            "block_size=2048 exceeds max_position",
        ),
        (["--streaming", "true"], "needs max_steps"),
        (["--eval_strategy", "steps", "--validation_split", "0"], "no validation data"),
    ],
)
def test_pretrain_cross_field_checks(tmp_path, flags, message):
    with pytest.raises(ConfigError, match=message):
        validate(parsed(PRETRAIN_ARGUMENTS, tmp_path, *flags))


def test_mlm_says_it_trains_no_tokenizer(tmp_path):
    """tokenizer_vocab_size was silently ignored by recipes/mlm.py (it reads a BERT vocab.txt)."""
    bert = ["--model_family", "bert", "--tokenizer_name_or_path", "v"]
    with pytest.raises(
        ConfigError, match="tokenizer_vocab_size=8000: recipes/mlm.py uses the BERT WordPiece"
    ):
        validate(parsed(MLM_ARGUMENTS, tmp_path, *bert, "--tokenizer_vocab_size", "8000"))
    validate(parsed(MLM_ARGUMENTS, tmp_path, *bert))


@pytest.mark.parametrize(
    "arguments, flags, message",
    [
        (
            PRETRAIN_ARGUMENTS,
            ["--block_size", "64", "--max_position_embeddings", "32"],
            "block_size=64 exceeds",
        ),
        (SFT_ARGUMENTS, ["--max_length", "64", "--max_position_embeddings", "32"], "max_length=64 exceeds"),
        (
            MLM_ARGUMENTS,
            ["--model_family", "bert", "--tokenizer_name_or_path", "v", "--max_len", "64"]
            + ["--max_position_embeddings", "32"],
            "max_len=64 exceeds max_position_embeddings=32",
        ),
        (PRETRAIN_ARGUMENTS, ["--eval_strategy", "steps", "--validation_split", "0"], "no validation data"),
        (SFT_ARGUMENTS, ["--eval_strategy", "steps"], "no validation data"),
        (
            MLM_ARGUMENTS,
            ["--model_family", "bert", "--tokenizer_name_or_path", "v", "--eval_strategy", "steps"]
            + ["--validation_split", "0"],
            "no validation data",
        ),
    ],
)
def test_one_check_serves_every_recipe(tmp_path, arguments, flags, message):
    """The position limit and the eval-without-validation-data check are written once, for the
    row length each recipe has (block_size, max_length, max_len) and every data config."""
    with pytest.raises(ConfigError, match=message):
        validate(parsed(arguments, tmp_path, *flags))


def test_validate_returns_the_arguments_and_knows_their_roles(tmp_path):
    arguments = parsed(SFT_ARGUMENTS, tmp_path)
    assert validate(arguments) == arguments
    roles = RecipeArgs.of(arguments)
    assert (roles.model, roles.data, roles.lora, roles.train, roles.probe) == arguments and roles.mlm is None
    assert roles.sequence_length() == ("max_length", 1024)
    with pytest.raises(TypeError, match="repeated argument ModelArguments"):
        RecipeArgs.of([arguments[0], arguments[0]])


def test_a_new_check_is_one_function_in_checks(tmp_path, monkeypatch):
    """Where cross-field checks are added: a function of RecipeArgs, appended to CHECKS."""

    def check_warmup_within_max_steps(args: RecipeArgs) -> None:
        if args.train is not None and 0 < args.train.max_steps < args.train.warmup_steps:
            raise ConfigError(
                f"warmup_steps={args.train.warmup_steps} exceeds max_steps={args.train.max_steps}"
            )

    monkeypatch.setattr("mini_lm.validation.CHECKS", [*CHECKS, check_warmup_within_max_steps])
    validate(parsed(PRETRAIN_ARGUMENTS, tmp_path))
    with pytest.raises(ConfigError, match=r"warmup_steps=10(\.0)? exceeds max_steps=5"):
        validate(parsed(PRETRAIN_ARGUMENTS, tmp_path, "--warmup_steps", "10", "--max_steps", "5"))


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--probe_language", "fr"], r"probe_language='fr'; choose from auto, zh, en, all"),
        (["--probe_benchmark", "mmlu"], r"probe_benchmark='mmlu'; choose from cmmlu, mc"),
        (["--probe_benchmark", "cmmlu"], r"needs probe_benchmark_data: the CMMLU folder"),
        (
            ["--probe_benchmark", "cmmlu", "--probe_benchmark_data", "nowhere"],
            r"needs probe_benchmark_data: nowhere not found",
        ),
        (
            ["--probe_benchmark", "cmmlu", "--probe_benchmark_data", ".", "--probe_benchmark_limit", "0"],
            r"limit=0",
        ),
        (
            ["--probe_benchmark", "cmmlu", "--probe_benchmark_data", ".", "--probe_benchmark_shots", "6"],
            r"shots=6: choose 0\.\.5",
        ),
    ],
)
def test_probe_language_and_benchmark_slice_are_checked_before_any_work(tmp_path, flags, message):
    with pytest.raises(ConfigError, match=message):
        validate(parsed(PRETRAIN_ARGUMENTS, tmp_path, *flags))
    validate(parsed(PRETRAIN_ARGUMENTS, tmp_path, *flags, "--probe", "false"))  # probes off: not asked


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--validation_split", "1.5"], r"validation_split=1.5 must be a fraction in \[0, 1\)"),
        (["--learning_rate", "0"], r"learning_rate=0.0 must be > 0"),
        (["--learning_rate", "nan"], r"learning_rate=nan must be > 0"),
        (["--per_device_train_batch_size", "0"], r"per_device_train_batch_size=0 must be >= 1"),
        (["--max_eval_documents", "-1"], r"max_eval_documents=-1 must be >= 0"),
        (["--dropout", "1"], r"dropout=1.0 must be in \[0, 1\)"),
        (["--probe_top_p", "0"], r"probe_top_p=0.0 must be in \(0, 1\]"),
        (["--max_nonfinite_skips", "-1"], r"max_nonfinite_skips=-1 must be >= 0"),
        (["--num_attention_heads", "3"], r"hidden_size=256 is not divisible by num_attention_heads=3"),
        (["--model_family", "gpt2", "--num_key_value_heads", "2"], "gpt2 has no grouped-query attention"),
    ],
)
def test_out_of_range_values_fail_before_any_data_work(tmp_path, flags, message):
    with pytest.raises(ConfigError, match=f"^{message}"):
        validate(parsed(PRETRAIN_ARGUMENTS, tmp_path, *flags))


def test_sft_mix_weights_are_checked_one_by_one(tmp_path):
    with pytest.raises(ConfigError, match=r"mix_weights=\[1.0, 0.0\] must be > 0 each"):
        validate(parsed(SFT_ARGUMENTS, tmp_path, "--mix_weights", "1", "0"))


@pytest.mark.parametrize(
    "arguments, config, flags, message",
    [
        # learned positions: before, an IndexError at step 1, after all the data work
        (PRETRAIN_ARGUMENTS, {"model_type": "gpt2", "n_positions": 64}, ["--block_size", "128"], "block_size=128 exceeds the 64 positions"),
        # RoPE: before, trained silently past its positions
        (SFT_ARGUMENTS, {"model_type": "qwen2", "max_position_embeddings": 512}, ["--max_length", "1024"], "max_length=1024 exceeds the 512 positions"),
        (
            MLM_ARGUMENTS,
            {"model_type": "bert", "max_position_embeddings": 16},
            ["--model_family", "bert", "--max_len", "32"],
            "max_len=32 exceeds the 16 positions",
        ),
    ],
)  # fmt: skip
def test_rows_longer_than_a_pretrained_models_positions_fail_at_start(
    tmp_path, arguments, config, flags, message
):
    import json

    model_dir = tmp_path / "pretrained"
    model_dir.mkdir()
    (model_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match=f"^{message} of {model_dir} .*set {flags[-2][2:]} <= "):
        validate(parsed(arguments, tmp_path, "--model_name_or_path", str(model_dir), *flags))
    fits = [*flags[:-1], "8"]
    validate(parsed(arguments, tmp_path, "--model_name_or_path", str(model_dir), *fits))  # control
    validate(parsed(arguments, tmp_path, "--model_name_or_path", str(model_dir), *flags), files=False)


def test_a_missing_local_model_dir_fails_at_start(tmp_path):
    missing = tmp_path / "no_model"
    with pytest.raises(ConfigError, match=f"model_name_or_path: no such dir {missing}"):
        validate(parsed(PRETRAIN_ARGUMENTS, tmp_path, "--model_name_or_path", str(missing)))
