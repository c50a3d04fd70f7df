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
from pathlib import Path

from transformers import TrainingArguments

from .config import (
    PROBE_LANGUAGES,
    LoraArguments,
    MLMArguments,
    ModelArguments,
    PreferenceDataArguments,
    PretrainDataArguments,
    ProbeArguments,
    SFTDataArguments,
)
from .errors import ConfigError
from .models.bert_adapter import context_window
from .multiple_choice import BENCHMARKS, MAX_SHOTS


@dataclass(frozen=True)
class RecipeArgs:
    """The parsed arguments of one recipe, by role."""

    model: ModelArguments | None = None
    data: PretrainDataArguments | SFTDataArguments | PreferenceDataArguments | None = None
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
        adapter, ``max_length`` for SFT and for DPO (TRL's DPOConfig field), ``block_size`` for
        pretraining."""
        if self.mlm is not None:
            return "max_len", self.mlm.max_len
        if isinstance(self.data, SFTDataArguments):
            return "max_length", self.data.max_length
        if isinstance(self.data, PreferenceDataArguments):
            return "max_length", self.train.max_length
        if isinstance(self.data, PretrainDataArguments):
            return "block_size", self.data.block_size
        return None


_ROLES = {
    "model": ModelArguments,
    "data": (PretrainDataArguments, SFTDataArguments, PreferenceDataArguments),
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
    if data.tokenizer_vocab_size:  # else silently ignored: the adapter trains no tokenizer
        raise ConfigError(
            f"tokenizer_vocab_size={data.tokenizer_vocab_size}: recipes/mlm.py uses the BERT WordPiece "
            "vocabulary of tokenizer_name_or_path and trains none; remove tokenizer_vocab_size"
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
    length = args.sequence_length()
    if isinstance(args.data, (SFTDataArguments, PreferenceDataArguments)) and length[1] < 8:
        raise ConfigError(f"max_length={length[1]} is too short to hold a prompt and an answer")


# TRL 1.16's DPO losses (DPOConfig.loss_type); tests/test_dpo.py checks the list against TRL's own.
DPO_LOSS_TYPES = (
    "sigmoid",
    "hinge",
    "ipo",
    "exo_pair",
    "nca_pair",
    "robust",
    "bco_pair",
    "sppo_hard",
    "aot",
    "aot_unpaired",
    "apo_zero",
    "apo_down",
    "discopop",
    "sft",
    "sigmoid_norm",
)


def check_dpo_recipe(args: RecipeArgs) -> None:
    """recipes/dpo.py: a trained causal LM to start from, and losses TRL knows (else it fails only
    at the first step, after the data and both models are loaded)."""
    if not isinstance(args.data, PreferenceDataArguments):
        return
    if args.model.model_family == "bert":
        raise ConfigError("recipes/dpo.py trains causal LMs (gpt2 | qwen2); the BERT adapter has no DPO path")
    if not args.model.model_name_or_path:
        raise ConfigError(
            "DPO starts from a trained model (it is also the reference): set model_name_or_path, "
            "e.g. an SFT run's output_dir"
        )
    if args.model.lm_loss != "full":
        # TRL computes the DPO log-probs from the logits it asks for (no labels): the chunked
        # loss would never run, so the setting would be silently ignored.
        raise ConfigError(
            f"lm_loss: {args.model.lm_loss} does not apply to DPO (TRL computes its loss from the "
            "logits itself): use lm_loss: full"
        )
    unknown = [t for t in args.train.loss_type if t not in DPO_LOSS_TYPES]
    if unknown:
        raise ConfigError(f"loss_type: unknown {unknown} (TRL's DPO losses: {', '.join(DPO_LOSS_TYPES)})")


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


def check_probe_benchmark(args: RecipeArgs) -> None:
    """The built-in questions' language, and the benchmark slice scored at every save."""
    probe = args.probe
    if probe is None or not probe.probe:
        return
    if probe.probe_language not in PROBE_LANGUAGES:
        raise ConfigError(
            f"probe_language={probe.probe_language!r}; choose from {', '.join(PROBE_LANGUAGES)}"
        )
    if not probe.probe_benchmark:
        return
    if probe.probe_benchmark not in BENCHMARKS:
        raise ConfigError(f"probe_benchmark={probe.probe_benchmark!r}; choose from {', '.join(BENCHMARKS)}")
    data = probe.probe_benchmark_data
    if not data or not Path(data).exists():
        raise ConfigError(
            f"probe_benchmark={probe.probe_benchmark} needs probe_benchmark_data: "
            + (f"{data} not found" if data else "the CMMLU folder (dev/, test/) or the mc file")
        )
    if probe.probe_benchmark_limit < 1:
        raise ConfigError(
            f"probe_benchmark_limit={probe.probe_benchmark_limit}: score at least 1 question per subject"
        )
    if not 0 <= probe.probe_benchmark_shots <= MAX_SHOTS:
        raise ConfigError(f"probe_benchmark_shots={probe.probe_benchmark_shots}: choose 0..{MAX_SHOTS}")


Check = Callable[[RecipeArgs], None]

# In order: the first failing check names the problem.
CHECKS: list[Check] = [
    check_mlm_recipe,
    check_sequence_fits_positions,
    check_sft_max_length,
    check_dpo_recipe,
    check_streaming_has_max_steps,
    check_eval_has_data,
    check_probe_benchmark,
]


def validate(parsed: Sequence) -> tuple:
    """Run every check on a recipe's parsed arguments (``parse_config``'s tuple); return them."""
    args = RecipeArgs.of(parsed)
    for check in CHECKS:
        check(args)
    return tuple(parsed)
