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
    """Where range and type checks are added: a function of RecipeArgs, appended to CHECKS."""

    def check_dropout_is_a_fraction(args: RecipeArgs) -> None:
        if args.model is not None and not 0 <= args.model.dropout <= 1:
            raise ConfigError(f"dropout={args.model.dropout} must be in [0, 1]")

    monkeypatch.setattr("mini_lm.validation.CHECKS", [*CHECKS, check_dropout_is_a_fraction])
    validate(parsed(PRETRAIN_ARGUMENTS, tmp_path))
    with pytest.raises(ConfigError, match=r"dropout=1.5 must be in \[0, 1\]"):
        validate(parsed(PRETRAIN_ARGUMENTS, tmp_path, "--dropout", "1.5"))
