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

import json
import math
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
from .models import check_model_shape
from .models.bert_adapter import context_window
from .multiple_choice import BENCHMARKS, MAX_SHOTS
from .tokenization import looks_like_hub_id


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
            f"eval_strategy={getattr(train.eval_strategy, 'value', train.eval_strategy)} but no validation "
            "data: set validation_split "
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


def _positive(v) -> bool:
    return v > 0 and math.isfinite(v)


# (role, field, test, what it must be). A None value (unset) is not checked; a list is checked item by item.
RANGES: list[tuple[str, str, Callable[[float], bool], str]] = [
    *[
        ("model", name, lambda v: v >= 1, ">= 1")
        for name in (
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "num_key_value_heads",
            "intermediate_size",
            "max_position_embeddings",
            "vocab_pad_multiple",
        )
    ],
    *[("model", name, _positive, "> 0") for name in ("rope_theta", "rms_norm_eps", "initializer_range")],
    ("model", "dropout", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("data", "validation_split", lambda v: 0 <= v < 1, "a fraction in [0, 1) (0.01 = 1% held out)"),
    ("data", "block_size", lambda v: v >= 2, ">= 2"),
    ("data", "max_length", lambda v: v >= 1, ">= 1"),
    *[
        ("data", name, lambda v: v >= 1, ">= 1")
        for name in (
            "max_train_documents",
            "max_train_samples",
            "max_turns",
            "num_proc",
        )
    ],
    *[
        ("data", name, lambda v: v >= 0, ">= 0")
        for name in ("max_eval_documents", "min_document_chars", "audit_samples")
    ],
    ("data", "tokenizer_vocab_size", lambda v: v >= 1, ">= 1 (0 or null: no tokenizer is trained)"),
    ("data", "mix_weights", _positive, "> 0 each"),
    ("mlm", "max_train_samples", lambda v: v >= 1, ">= 1"),
    ("lora", "lora_r", lambda v: v >= 1, ">= 1"),
    ("lora", "lora_alpha", _positive, "> 0"),
    ("lora", "lora_dropout", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("train", "learning_rate", _positive, "> 0"),
    ("train", "weight_decay", lambda v: v >= 0 and math.isfinite(v), ">= 0"),
    ("train", "max_grad_norm", lambda v: v >= 0 and math.isfinite(v), ">= 0 (0: no clipping)"),
    ("train", "warmup_ratio", lambda v: 0 <= v <= 1, "in [0, 1]"),
    ("train", "warmup_steps", lambda v: v >= 0, ">= 0"),
    ("train", "num_train_epochs", lambda v: v > 0, "> 0"),
    ("train", "max_nonfinite_skips", lambda v: v >= 0, ">= 0"),
    *[
        ("train", name, lambda v: v >= 1, ">= 1")
        for name in (
            "per_device_train_batch_size",
            "per_device_eval_batch_size",
            "gradient_accumulation_steps",
        )
    ],
    *[("probe", name, lambda v: v >= 1, ">= 1") for name in ("probe_max_new_tokens", "probe_batch_size")],
    ("probe", "probe_temperature", _positive, "> 0"),
    ("probe", "probe_top_k", lambda v: v >= 0, ">= 0 (0: off)"),
    ("probe", "probe_top_p", lambda v: 0 < v <= 1, "in (0, 1]"),
    ("probe", "probe_repetition_penalty", _positive, "> 0"),
    ("probe", "probe_wait_minutes", _positive, "> 0"),
]


def check_ranges(args: RecipeArgs) -> None:
    """Every bounded field in its range (``RANGES``): ``validation_split=1.5 must be a fraction in [0, 1)``."""
    for role, name, ok, what in RANGES:
        holder = getattr(args, role)
        value = getattr(holder, name, None) if holder is not None else None
        if value is None or (name == "tokenizer_vocab_size" and value == 0):
            continue
        bad = [v for v in value if not ok(v)] if isinstance(value, list) else [] if ok(value) else [value]
        if bad:
            raise ConfigError(f"{name}={value!r} must be {what}")


def check_model_fits_together(args: RecipeArgs) -> None:
    """Random init: heads divide the width, GQA only where the family has it."""
    if args.model is not None and not args.model.model_name_or_path:
        check_model_shape(args.model)


def check_paths_exist(args: RecipeArgs) -> None:
    """Local model / tokenizer dirs and the probe questions file exist (a hub id is not checked)."""
    named = []
    if args.model is not None:
        named += [("model_name_or_path", args.model.model_name_or_path)]
        named += [("tokenizer_name_or_path", args.model.tokenizer_name_or_path)]
    for name, value in named:
        if value and not Path(value).exists() and not looks_like_hub_id(value):
            raise ConfigError(f"{name}: no such dir {value} (give a local model dir or a hub id)")
    questions = args.probe.probe_questions if args.probe is not None and args.probe.probe else None
    if questions and not Path(questions).is_file():
        raise ConfigError(f"probe_questions: no such file {questions}")


def check_pretrained_positions(args: RecipeArgs) -> None:
    """A pretrained model's positions must hold a whole row: GPT-2 / BERT (learned positions) would
    crash at step 1 with an IndexError after all the data work, Qwen2 would train past its range.
    Reads only ``config.json`` of a local ``model_name_or_path``."""
    length = args.sequence_length()
    name_or_path = args.model.model_name_or_path if args.model is not None else None
    if length is None or not name_or_path or not (Path(name_or_path) / "config.json").is_file():
        return
    config_file = Path(name_or_path) / "config.json"
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ConfigError(f"{config_file}: not readable as JSON ({err})") from err
    positions = next((config[k] for k in ("max_position_embeddings", "n_positions") if k in config), None)
    name, value = length
    if isinstance(positions, int) and value > positions:
        raise ConfigError(
            f"{name}={value} exceeds the {positions} positions of {name_or_path} "
            f"({config_file.name}: {config.get('model_type', 'model')}): set {name} <= {positions}"
        )


Check = Callable[[RecipeArgs], None]

# In order: the first failing check names the problem.
CHECKS: list[Check] = [
    check_ranges,
    check_model_fits_together,
    check_mlm_recipe,
    check_sequence_fits_positions,
    check_sft_max_length,
    check_dpo_recipe,
    check_streaming_has_max_steps,
    check_eval_has_data,
    check_probe_benchmark,
]
# Checks that read the filesystem (inputs exist, a pretrained model's config.json): skipped by
# ``validate(..., files=False)``, for shipped configs that name the outputs of earlier steps.
FILE_CHECKS: list[Check] = [
    check_paths_exist,
    check_pretrained_positions,
]


def validate(parsed: Sequence, files: bool = True) -> tuple:
    """Run every check on a recipe's parsed arguments (``parse_config``'s tuple); return them.
    ``files``: also the ``FILE_CHECKS``."""
    args = RecipeArgs.of(parsed)
    for check in [*CHECKS, *(FILE_CHECKS if files else [])]:
        check(args)
    return tuple(parsed)
