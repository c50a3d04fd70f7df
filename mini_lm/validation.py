"""Recipe argument checks: run once, right after parsing, before any data or model work.

    model_args, data_args, training_args, probe_args = validate(parse_config(PRETRAIN_ARGUMENTS, argv))

``validate`` views the parsed dataclasses as one ``RecipeArgs`` (a field is None when the recipe has
no such dataclass) and runs every function of ``CHECKS`` on it, in order. A check raises
``ConfigError`` naming the field(s), the value and the fix, and returns when it does not apply to
the recipe at hand. A new check is one function ``check_x(args: RecipeArgs) -> None`` added to
``CHECKS``; each check is written once for every recipe it concerns.

Launch consistency (DeepSpeed / accelerate batch sizes) is checked earlier still, when the
training arguments are built (mini_lm/launch_checks.py); per-record data checks stay with the
data readers (mini_lm/data/chat.py), probe questions with mini_lm/probing.py.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from transformers import TrainingArguments

from .config import (
    LoraArguments,
    MLMArguments,
    ModelArguments,
    PretrainDataArguments,
    ProbeArguments,
    SFTDataArguments,
)
from .errors import ConfigError
from .models.bert_adapter import context_window


@dataclass(frozen=True)
class RecipeArgs:
    """The parsed arguments of one recipe, by role."""

    model: ModelArguments | None = None
    data: PretrainDataArguments | SFTDataArguments | None = None
    mlm: MLMArguments | None = None
    lora: LoraArguments | None = None
    train: TrainingArguments | None = None
    probe: ProbeArguments | None = None

    @classmethod
    def of(cls, parsed: Sequence) -> RecipeArgs:
        roles = {}
        for value in parsed:
            role = next((name for name, kinds in _ROLES.items() if isinstance(value, kinds)), None)
            if role is None or role in roles:
                raise TypeError(f"validate: unexpected or repeated argument {type(value).__name__}")
            roles[role] = value
        return cls(**roles)

    def sequence_length(self) -> tuple[str, int] | None:
        """The field that sets the tokens per row, and its value: ``max_len`` for the BERT
        adapter, ``max_length`` for SFT, ``block_size`` for pretraining."""
        if self.mlm is not None:
            return "max_len", self.mlm.max_len
        if isinstance(self.data, SFTDataArguments):
            return "max_length", self.data.max_length
        if isinstance(self.data, PretrainDataArguments):
            return "block_size", self.data.block_size
        return None


_ROLES = {
    "model": ModelArguments,
    "data": (PretrainDataArguments, SFTDataArguments),
    "mlm": MLMArguments,
    "lora": LoraArguments,
    "train": TrainingArguments,
    "probe": ProbeArguments,
}


# --------------------------------------------------------------------------- checks


def check_mlm_recipe(args: RecipeArgs) -> None:
    """recipes/mlm.py: a BERT, a vocabulary, a window with room for context; block_size is max_len's."""
    if args.mlm is None:
        return
    model, data, mlm = args.model, args.data, args.mlm
    if model.model_family != "bert":
        raise ConfigError(
            f"recipes/mlm.py trains the BERT adapter: set model_family: bert (got '{model.model_family}')"
        )
    if not (model.tokenizer_name_or_path or model.model_name_or_path):
        raise ConfigError(
            "no vocabulary: set tokenizer_name_or_path to a dir holding a BERT vocab.txt "
            "(or model_name_or_path to a pretrained BERT dir)"
        )
    context = context_window(mlm.max_len)
    if context < 1:
        raise ConfigError(
            f"max_len={mlm.max_len} leaves no context: it counts [CLS], [MASK] and [SEP], so use >= 4"
        )
    if not 1 <= mlm.min_context <= context:
        raise ConfigError(f"min_context={mlm.min_context} must be in [1, max_len - 3 = {context}]")
    default_block = PretrainDataArguments.__dataclass_fields__["block_size"].default
    if data.block_size not in (default_block, context + 1):
        raise ConfigError(
            f"block_size={data.block_size}: recipes/mlm.py cuts windows of max_len - 2 = {context + 1} "
            "tokens; set max_len instead of block_size"
        )
    if mlm.max_train_samples is not None and mlm.max_train_samples < 1:
        raise ConfigError(f"max_train_samples={mlm.max_train_samples} must be >= 1")


def check_sequence_fits_positions(args: RecipeArgs) -> None:
    """A random-init model's positions must hold a whole row (GPT-2's learned ones would crash)."""
    length = args.sequence_length()
    if length is None or args.model is None or args.model.model_name_or_path:
        return
    name, value = length
    if value > args.model.max_position_embeddings:
        raise ConfigError(
            f"{name}={value} exceeds max_position_embeddings={args.model.max_position_embeddings}"
        )


def check_sft_max_length(args: RecipeArgs) -> None:
    if isinstance(args.data, SFTDataArguments) and args.data.max_length < 8:
        raise ConfigError(f"max_length={args.data.max_length} is too short to hold a prompt and an answer")


def check_streaming_has_max_steps(args: RecipeArgs) -> None:
    if getattr(args.data, "streaming", False) and args.train is not None and args.train.max_steps <= 0:
        raise ConfigError("streaming: true needs max_steps (a stream has no length to derive epochs from)")


def check_eval_has_data(args: RecipeArgs) -> None:
    """Evaluation needs held-out data: validation_files or a validation_split."""
    data, train = args.data, args.train
    if data is None or train is None or train.eval_strategy == "no":
        return
    if data.validation_split <= 0 and not data.validation_files:
        raise ConfigError(
            f"eval_strategy={train.eval_strategy} but no validation data: set validation_split "
            "or validation_files"
        )


Check = Callable[[RecipeArgs], None]

# In order: the first failing check names the problem.
CHECKS: list[Check] = [
    check_mlm_recipe,
    check_sequence_fits_positions,
    check_sft_max_length,
    check_streaming_has_max_steps,
    check_eval_has_data,
]


def validate(parsed: Sequence) -> tuple:
    """Run every check on a recipe's parsed arguments (``parse_config``'s tuple); return them."""
    args = RecipeArgs.of(parsed)
    for check in CHECKS:
        check(args)
    return tuple(parsed)
