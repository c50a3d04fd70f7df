"""Recipe configuration: dataclasses filled from one flat YAML file, CLI flags win.

    python recipes/pretrain.py --config recipes/configs/qwen2/pretrain_tiny.yaml --max_steps 50

The YAML holds the fields of every dataclass a recipe takes (model, data and HF
``TrainingArguments``) at the top level. Unknown keys fail loudly, naming the key and
the file. String values may use ``${VAR}`` or ``${VAR:-default}``; that is how
configs point at shared data without hard-coding a machine's layout.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import os
import re
import sys
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from transformers import HfArgumentParser, TrainingArguments
from trl import DPOConfig

from .errors import ConfigError
from .launch_checks import check_global_batch, no_accelerator, pinned_batch_values
from .loss import check_liger_kernel


@dataclass
class ModelArguments:
    """Which model to build: a random-init size config or a local/hub pretrained path."""

    # --- what to build ---
    model_family: str = field(
        default="qwen2", metadata={"help": "Architecture for random init: gpt2 | qwen2 | bert."}
    )
    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Pretrained model dir (or hub id). When set, weights are loaded and the "
            "size fields below are ignored."
        },
    )
    tokenizer_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Tokenizer dir (or hub id). Defaults to model_name_or_path; for random init "
            "it is required unless the data config trains one."
        },
    )
    # --- size, for random init (family-neutral names, mapped to each HF config) ---
    hidden_size: int = field(default=256, metadata={"help": "Width d_model."})
    num_hidden_layers: int = field(default=4, metadata={"help": "Transformer blocks."})
    num_attention_heads: int = field(default=4, metadata={"help": "Query heads."})
    num_key_value_heads: int | None = field(
        default=None, metadata={"help": "KV heads for GQA (qwen2). Default: num_attention_heads."}
    )
    intermediate_size: int | None = field(default=None, metadata={"help": "MLP width. Default: 4 x hidden."})
    max_position_embeddings: int = field(default=1024, metadata={"help": "Longest sequence the model takes."})
    rope_theta: float = field(default=10000.0, metadata={"help": "RoPE base (qwen2)."})
    rms_norm_eps: float = field(default=1e-6, metadata={"help": "RMSNorm epsilon (qwen2)."})
    tie_word_embeddings: bool = field(default=True, metadata={"help": "Share input and output embeddings."})
    dropout: float = field(default=0.0, metadata={"help": "Dropout (embedding, attention, residual)."})
    initializer_range: float = field(default=0.02, metadata={"help": "Std of the normal init."})
    vocab_pad_multiple: int = field(
        default=64,
        metadata={
            "help": "Round the embedding rows up to a multiple of this (tensor-core friendly). "
            "1 keeps exactly len(tokenizer)."
        },
    )
    # --- runtime ---
    attn_implementation: str = field(
        default="auto",
        metadata={
            "help": "auto (flash_attention_2 when flash_attn is importable and CUDA is present; else "
            "flex_attention for packed SFT rows on CUDA; else sdpa) | flash_attention_2 | flex_attention "
            "| sdpa | eager."
        },
    )
    lm_loss: str = field(
        default="full",
        metadata={
            "help": "full: the model's own loss over (tokens x vocab) logits | chunked: LM head + "
            "cross-entropy a chunk of tokens at a time, never the full fp32 logits (mini_lm/loss.py). "
            "use_liger_kernel: true replaces either with Liger's fused kernel (GPU)."
        },
    )
    lm_loss_chunk_size: int = field(default=4096, metadata={"help": "Tokens per chunk for lm_loss: chunked."})
    dtype: str = field(
        default="auto",
        metadata={
            "help": "Weights dtype when loading a pretrained model: auto | float32 | bfloat16 | float16."
        },
    )


@dataclass
class PretrainDataArguments:
    """Corpus -> tokens -> packed fixed-length blocks."""

    train_files: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Files (.txt .jsonl .json .csv .tsv .parquet), folders, globs or hub dataset names."
        },
    )
    validation_files: list[str] = field(
        default_factory=list, metadata={"help": "Held-out corpus. Default: validation_split of train_files."}
    )
    # --- how files become documents (mini_lm/data/corpus.py) ---
    text_field: str = field(
        default="text",
        metadata={
            "help": "Field / column holding the text in json/csv/parquet/hub data: a string, or a list of "
            "strings joined by text_joiner (chinese-poetry's paragraphs)."
        },
    )
    text_template: str | None = field(
        default=None,
        metadata={
            "help": "Build each document from several fields instead of text_field, e.g. "
            "'{rhythmic}\\n{paragraphs}' (list fields joined by text_joiner)."
        },
    )
    text_joiner: str = field(default="\n", metadata={"help": "Joins the items of a list-valued field."})
    text_sample_by: str = field(
        default="line",
        metadata={
            "help": "How .txt files split into documents: line | paragraph (blank-line separated) | document."
        },
    )
    document_separator: str | None = field(
        default=None,
        metadata={
            "help": "Split .txt files into documents at this string instead (TinyStories: <|endoftext|>); "
            "it becomes the tokenizer's document separator token, never text."
        },
    )
    encoding: str | None = field(
        default=None,
        metadata={
            "help": "Encoding of the corpus files. Default: UTF-8 (BOM or not), else GB18030 / Big5 / "
            "UTF-16 detected (logged with a sample)."
        },
    )
    parse_special_tokens: bool = field(
        default=False,
        metadata={
            "help": "Read special-token strings in the text (<|im_start|>, <|endoftext|>) as the tokens "
            "themselves (MiniMind-style pretraining data). Default: plain text, so text cannot inject "
            "control tokens."
        },
    )
    hub_split: str = field(default="train", metadata={"help": "Split to read from hub dataset names."})
    block_size: int = field(default=512, metadata={"help": "Tokens per packed training row."})
    validation_split: float = field(
        default=0.01, metadata={"help": "Fraction of documents held out for eval when no validation_files."}
    )
    max_eval_documents: int = field(
        default=2000,
        metadata={"help": "Cap on held-out documents taken by validation_split (keeps eval fast)."},
    )
    max_train_documents: int | None = field(
        default=None, metadata={"help": "Use only the first N training documents (debugging)."}
    )
    streaming: bool = field(
        default=False,
        metadata={
            "help": "Stream the corpus (larger than memory). Needs max_steps; eval takes the first "
            "max_eval_documents documents."
        },
    )
    num_proc: int | None = field(default=None, metadata={"help": "Processes for datasets.map tokenization."})
    min_document_chars: int = field(default=1, metadata={"help": "Skip (and count) shorter documents."})
    # --- optional tokenizer training as part of the recipe ---
    tokenizer_vocab_size: int | None = field(
        default=None,
        metadata={
            "help": "Train a byte-level BPE of this size on train_files into "
            "<output_dir>/tokenizer when no tokenizer is given."
        },
    )


@dataclass
class SFTDataArguments:
    """Chat files -> rendered with the chat template -> assistant-only labels -> padded or packed rows."""

    train_files: list[str] = field(
        default_factory=list,
        metadata={"help": "SFT .json/.jsonl files, folders or globs (several are mixed)."},
    )
    data_formats: list[str] = field(
        default_factory=list,
        metadata={
            "help": "auto | messages | sharegpt | alpaca | prompt_completion | text: one for all "
            "train_files, or one per file. Default: detected for each record (formats may mix)."
        },
    )
    mix_weights: list[float] = field(
        default_factory=list,
        metadata={"help": "Per-file repeat factor: 2.0 = every conversation twice, 0.5 = a random half."},
    )
    validation_files: list[str] = field(default_factory=list, metadata={"help": "Held-out SFT files."})
    validation_split: float = field(
        default=0.0,
        metadata={"help": "Fraction of conversations held out for eval when no validation_files."},
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Use only the first N conversations after mixing (debugging)."}
    )
    system_prompt: str | None = field(
        default=None, metadata={"help": "System message for conversations that have none."}
    )
    placeholders: dict | str | None = field(
        default=None,
        metadata={
            "help": "Values for {{name}} placeholders in the data, e.g. {name: MiniLM, author: me} "
            "(JSON on the command line)."
        },
    )
    chat_template: str | None = field(
        default=None,
        metadata={
            "help": "chatml | a .jinja file | a template string. Default: the tokenizer's own "
            "(an error if it has none). The chosen template is saved with the model."
        },
    )
    max_length: int = field(
        default=1024,
        metadata={
            "help": "Tokens per conversation. Longer ones keep their first whole exchanges; a sample "
            "left with no supervised token is dropped and counted."
        },
    )
    max_turns: int | None = field(
        default=None,
        metadata={"help": "Keep only the first N user/assistant exchanges of each conversation."},
    )
    packing: bool = field(
        default=False,
        metadata={
            "help": "Padding-free: pack conversations into rows of max_length with position_ids "
            "restarting per conversation (attention never crosses them). Default: padded batches."
        },
    )
    skip_invalid: bool = field(
        default=False,
        metadata={"help": "Skip (and count) malformed records instead of failing on the first one."},
    )
    audit_samples: int = field(default=1, metadata={"help": "Rendered samples shown by the label audit."})
    num_proc: int | None = field(default=None, metadata={"help": "Processes for datasets.map tokenization."})
    tokenizer_vocab_size: int | None = field(
        default=None,
        metadata={
            "help": "Train a byte-level BPE of this size on the SFT conversations into "
            "<output_dir>/tokenizer when no tokenizer is given (SFT from scratch)."
        },
    )

    def __post_init__(self):
        self.placeholders = parse_placeholders(self.placeholders)


@dataclass
class PreferenceDataArguments:
    """Preference pairs (a prompt, a chosen and a rejected answer) -> chat template -> token ids for DPO.

    The length limit is ``max_length`` and the tokenization processes ``dataset_num_proc``, both of
    TRL's ``DPOConfig`` (``MiniLMDPOConfig``): one key each, not two.
    """

    train_files: list[str] = field(
        default_factory=list,
        metadata={"help": "Preference .json/.jsonl files, folders or globs (several are mixed)."},
    )
    data_formats: list[str] = field(
        default_factory=list,
        metadata={
            "help": "auto | sharegpt_ranking | message_pairs | trl: one for all train_files, or one per "
            "file. Default: detected from each file's first record."
        },
    )
    mix_weights: list[float] = field(
        default_factory=list,
        metadata={"help": "Per-file repeat factor: 2.0 = every pair twice, 0.5 = a random half."},
    )
    validation_files: list[str] = field(default_factory=list, metadata={"help": "Held-out preference files."})
    validation_split: float = field(
        default=0.0, metadata={"help": "Fraction of pairs held out for eval when no validation_files."}
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Use only the first N pairs after mixing (debugging)."}
    )
    system_prompt: str | None = field(
        default=None, metadata={"help": "System message for pairs whose prompt has none."}
    )
    placeholders: dict | str | None = field(
        default=None,
        metadata={
            "help": "Values for {{name}} placeholders, e.g. {name: MiniLM} (JSON on the command line)."
        },
    )
    chat_template: str | None = field(
        default=None,
        metadata={
            "help": "chatml | a .jinja file | a template string. Default: the tokenizer's own (an SFT "
            "model's template, saved with it)."
        },
    )
    skip_invalid: bool = field(
        default=False,
        metadata={"help": "Skip (and count) malformed records instead of failing on the first one."},
    )
    audit_samples: int = field(default=1, metadata={"help": "Rendered pairs shown by the preference audit."})

    def __post_init__(self):
        self.placeholders = parse_placeholders(self.placeholders)


def parse_placeholders(value: dict | str | None) -> dict:
    """``{name: MiniLM}`` from YAML, or its JSON string from the command line -> a dict."""
    if isinstance(value, str):  # --placeholders '{"name": "MiniLM"}'
        try:
            value = json.loads(value)
        except json.JSONDecodeError as err:
            raise ConfigError(f"placeholders must be a mapping (JSON on the command line): {err}") from err
    value = value or {}
    if not isinstance(value, dict):
        raise ConfigError(f"placeholders must be a mapping of name: value, got {value!r}")
    return value


@dataclass
class LoraArguments:
    """LoRA adapters through peft; the base weights stay frozen."""

    use_peft: bool = field(default=False, metadata={"help": "Train LoRA adapters instead of all weights."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling numerator (scale = alpha / r)."})
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA path."})
    lora_target_modules: list[str] = field(
        default_factory=lambda: ["all-linear"],
        metadata={
            "help": "Module names to adapt (q_proj v_proj ...), or all-linear (every linear but the head)."
        },
    )
    lora_modules_to_save: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Modules trained in full and saved with the adapter (e.g. embed_tokens lm_head "
            "when the chat template added tokens)."
        },
    )


@dataclass
class MLMArguments:
    """The BERT adapter's next-token windows (recipes/mlm.py): [CLS] context [MASK] [SEP] -> next token."""

    max_len: int = field(
        default=15,
        metadata={
            "help": "BERT input length: [CLS] + (max_len - 3) context tokens + [MASK] + [SEP] (seed 001: 15). "
            "The corpus is cut into windows of max_len - 2 tokens: the context and its next token."
        },
    )
    min_context: int = field(
        default=1,
        metadata={
            "help": "Shortest training context. Context lengths are drawn uniformly in "
            "[min_context, max_len - 3], so short prompts are in distribution at generation."
        },
    )
    max_train_samples: int | None = field(
        default=None,
        metadata={"help": "Train on N windows drawn at random from the corpus (seed 001: 50,000)."},
    )


@dataclass
class MiniLMTrainingArguments(TrainingArguments):
    """HF TrainingArguments with CPU-safe defaults and throughput/MFU logging."""

    include_num_input_tokens_seen: str = field(
        default="non_padding",
        metadata={"help": "Token counting for tokens/s and MFU: no | all | non_padding."},
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Start over in an output_dir that holds a run: the old run (checkpoints, model, "
            "probes, logs) is renamed to <output_dir>.old-<time>, never deleted."
        },
    )
    max_nonfinite_skips: int = field(
        default=0,
        metadata={
            "help": "Skip up to N optimizer steps whose loss or gradients are NaN/inf (no weight or "
            "optimizer-state update; counted and reported) instead of stopping at the first."
        },
    )
    peak_tflops: float | None = field(
        default=None,
        metadata={
            "help": "Per-device peak TFLOP/s for MFU. Default: looked up from the GPU name (bf16 dense)."
        },
    )

    def __post_init__(self):
        # DeepSpeed on CPU ranks needs use_cpu=True, else its batch checks fail or, worse, every
        # rank trains on the same batches (docs/distributed.md). Harmless otherwise.
        if not self.use_cpu and no_accelerator():
            self.use_cpu = True
        liger_problem = check_liger_kernel(self.use_liger_kernel)
        if liger_problem:  # else the Trainer fails on it only when training starts
            raise ConfigError(liger_problem)
        # --report_to wandb,tensorboard | --report_to wandb tensorboard | YAML [wandb, tensorboard]
        if isinstance(self.report_to, str) and "," in self.report_to or isinstance(self.report_to, list):
            items = [self.report_to] if isinstance(self.report_to, str) else self.report_to
            self.report_to = [r.strip() for item in items for r in str(item).split(",") if r.strip()]
        # The launch checks live in mini_lm/launch_checks.py; they run at construction so that any
        # caller, not only the recipes, fails before data or model work. The DeepSpeed JSON is read
        # before super(), whose own parse of a broken one does not name the file.
        pinned = pinned_batch_values(self)
        super().__post_init__()
        check_global_batch(self, pinned)


@dataclass
class MiniLMDPOConfig(MiniLMTrainingArguments, DPOConfig):
    """TRL's ``DPOConfig`` (``beta``, ``loss_type``, ``loss_weights``, ``max_length``,
    ``precompute_ref_log_probs``, ...) with mini_lm's training arguments: every DPO key is TRL's own
    field, read from the YAML like any other.

    ``MiniLMTrainingArguments`` comes first in the bases, so the defaults shared with
    ``TrainingArguments`` are ours (CPU-safe: bf16 and gradient checkpointing off, which TRL turns
    on) and ``__post_init__`` runs our launch checks around TRL's. SFT-regularised DPO (an NLL term
    on the chosen answer, RPO) is ``loss_type: [sigmoid, sft]`` with ``loss_weights: [1.0, alpha]``:
    TRL 1.16 has no ``rpo_alpha``.
    """


@dataclass
class ProbeArguments:
    """Checkpoint probes: at every save the model answers fixed questions (see mini_lm/probing.py)."""

    probe: bool = field(default=True, metadata={"help": "Probe every saved checkpoint (false: off)."})
    probe_questions: str | None = field(
        default=None,
        metadata={
            "help": "Questions file (YAML / JSON / JSONL). Default: the built-in set "
            "(seed 000's raw prompts, seed 004's chat questions)."
        },
    )
    probe_decoding: list[str] = field(
        default_factory=lambda: ["greedy", "sampled"], metadata={"help": "Decodings to run: greedy, sampled."}
    )
    probe_max_new_tokens: int = field(default=60, metadata={"help": "New tokens per answer (seed 000: 60)."})
    probe_temperature: float = field(default=0.8, metadata={"help": "Sampled decoding temperature."})
    probe_top_k: int = field(default=50, metadata={"help": "Sampled decoding top-k (0: off)."})
    probe_top_p: float = field(default=1.0, metadata={"help": "Sampled decoding nucleus mass."})
    probe_repetition_penalty: float = field(
        default=1.0, metadata={"help": "1.0 keeps repetition visible: measuring it is the point."}
    )
    probe_seed: int = field(default=0, metadata={"help": "Sampling seed: a re-run gives the same answers."})
    probe_batch_size: int = field(default=32, metadata={"help": "Prompts generated together (KV cache)."})
    probe_wait_minutes: float = field(
        default=120.0,
        metadata={
            "help": "How long the other ranks wait for rank 0 to finish a probe before failing "
            "(their own process group, so NCCL/gloo timeouts of training do not apply)."
        },
    )
    probe_language: str = field(  # one of PROBE_LANGUAGES
        default="auto",
        metadata={
            "help": "Language of the built-in questions: auto (the training data's), zh, en, all. "
            "A probe_questions file is used as written."
        },
    )
    probe_benchmark: str | None = field(
        default=None,
        metadata={
            "help": "Also score a benchmark slice at every save: cmmlu, or mc (a multiple-choice file)."
        },
    )
    probe_benchmark_data: str | None = field(
        default=None, metadata={"help": "The benchmark's data: CMMLU's folder (dev/, test/), or the mc file."}
    )
    probe_benchmark_subjects: list[str] | None = field(
        default=None, metadata={"help": "Benchmark subjects to score (default: all)."}
    )
    probe_benchmark_limit: int = field(
        default=10, metadata={"help": "Questions per subject scored at each save (the first ones)."}
    )
    probe_benchmark_shots: int = field(
        default=0, metadata={"help": "Solved examples before each question (0-5)."}
    )


PROBE_LANGUAGES = ("auto", "zh", "en", "all")

# What each recipe parses, in order (``parse_config`` returns one instance per class).
PRETRAIN_ARGUMENTS = (ModelArguments, PretrainDataArguments, MiniLMTrainingArguments, ProbeArguments)
SFT_ARGUMENTS = (ModelArguments, SFTDataArguments, LoraArguments, MiniLMTrainingArguments, ProbeArguments)
MLM_ARGUMENTS = (ModelArguments, PretrainDataArguments, MLMArguments, MiniLMTrainingArguments, ProbeArguments)
DPO_ARGUMENTS = (ModelArguments, PreferenceDataArguments, LoraArguments, MiniLMDPOConfig, ProbeArguments)


# --------------------------------------------------------------------------- parsing

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(value: Any) -> Any:
    """Expand ``${VAR}`` / ``${VAR:-default}`` in strings (recursively in lists).

    >>> os.environ.pop("MINI_LM_X", None); expand_env("${MINI_LM_X:-../data}/zh")
    '../data/zh'
    """
    if isinstance(value, str):

        def sub(m: re.Match) -> str:
            if m.group(1) in os.environ:
                return os.environ[m.group(1)]
            if m.group(2) is not None:
                return m.group(2)
            raise ConfigError(f"environment variable {m.group(1)} is not set (used as {m.group(0)})")

        return _VAR.sub(sub, value)
    if isinstance(value, list):
        return [expand_env(v) for v in value]
    return value


def load_yaml_config(path: str | os.PathLike, known_keys: set[str]) -> dict[str, Any]:
    """Read a flat YAML mapping; reject keys that no dataclass knows and keys given twice (YAML
    itself lets the last one win silently), naming file, line and key. Values are not checked
    here (``check_yaml_values`` does that against the fields)."""
    return read_yaml_config(path, known_keys)[0]


def read_yaml_config(path: str | os.PathLike, known_keys: set[str]) -> tuple[dict[str, Any], dict[str, int]]:
    """(values, line of each key): see ``load_yaml_config``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        _refuse_duplicate_keys(root, path)
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping of key: value, got {type(raw).__name__}")
    lines = {k.value: k.start_mark.line + 1 for k, _ in root.value} if root is not None else {}
    unknown = [k for k in raw if k not in known_keys]
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(str(key), sorted(known_keys), n=1)
            hints.append(f"'{key}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
        first = lines.get(str(unknown[0]))
        raise ConfigError(f"{path}{f':{first}' if first else ''}: unknown config key(s): {', '.join(hints)}")
    values = {}
    for key, value in raw.items():
        try:
            values[key] = expand_env(value)
        except ConfigError as err:
            raise ConfigError(f"{path}:{lines.get(key, '?')}: {key}: {err}") from None
    return values, lines


def _refuse_duplicate_keys(node, path: Path) -> None:
    """Every mapping of the document (the top level and nested ones) names each key once."""
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key, value in node.value:
            line = key.start_mark.line + 1
            if isinstance(key, yaml.ScalarNode) and key.value in seen:
                raise ConfigError(
                    f"{path}:{line}: key '{key.value}' is given twice (also on line {seen[key.value]}); "
                    "YAML would silently keep the last one: delete one of them"
                )
            if isinstance(key, yaml.ScalarNode):
                seen[key.value] = line
            _refuse_duplicate_keys(value, path)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _refuse_duplicate_keys(item, path)


def _pop_config_flag(argv: list[str]) -> str | None:
    for i, arg in enumerate(argv):
        if arg == "--config":
            if i + 1 >= len(argv):
                raise ConfigError("--config needs a path")
            path = argv[i + 1]
            del argv[i : i + 2]
            return path
        if arg.startswith("--config="):
            del argv[i]
            return arg.split("=", 1)[1]
    return None


def parse_config(dataclass_types: Sequence[type], args: Sequence[str] | None = None) -> tuple:
    """Fill ``dataclass_types`` from ``--config FILE`` (YAML) and CLI flags; flags win.

    Example: ``parse_config([ModelArguments, MiniLMTrainingArguments], ["--config", "a.yaml",
    "--learning_rate", "1e-3"])`` -> (ModelArguments(...), MiniLMTrainingArguments(learning_rate=0.001, ...)).

    YAML values are checked against each field's type and choices (naming file, line and key);
    on the command line ``null`` / ``none`` unsets an option whose default is unset, and
    ``--report_to wandb tensorboard`` takes several values.
    """
    argv = list(sys.argv[1:] if args is None else args)
    parser = make_parser(dataclass_types)
    known = {f.name for dt in dataclass_types for f in dataclasses.fields(dt) if f.init}
    config_path = _pop_config_flag(argv)
    if config_path:
        values, lines = read_yaml_config(config_path, known)
        parser.set_defaults(**check_yaml_values(values, parser, dataclass_types, config_path, lines))
    *parsed, remaining = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
    flags = [a for a in remaining if a.startswith("--")]
    if remaining:
        hints = []
        for flag in flags or remaining[:1]:
            close = difflib.get_close_matches(flag.lstrip("-").split("=")[0], sorted(known), n=1)
            hints.append(f"'{flag}'" + (f" (did you mean '--{close[0]}'?)" if close else ""))
        raise ConfigError(f"unknown command-line argument(s): {', '.join(hints)}")
    return tuple(parsed)


def make_parser(dataclass_types: Sequence[type]) -> HfArgumentParser:
    """HfArgumentParser whose errors are ``ConfigError`` (one line, no usage dump), where ``null`` /
    ``none`` unsets an option whose default is None, and ``--report_to`` takes several values."""
    parser = HfArgumentParser(list(dataclass_types))

    def error(message: str):
        raise ConfigError(f"command line: {message}")

    parser.error = error
    for action in parser._actions:
        if action.default is None and action.type is not None and action.nargs is None:
            action.type = _or_none(action.type)
        if action.dest == "report_to":
            action.nargs = "+"
    return parser


def _or_none(convert):
    def parse(text: str):
        return None if isinstance(text, str) and text.lower() in ("null", "none") else convert(text)

    parse.__name__ = getattr(convert, "__name__", "value")  # argparse names it: "invalid int value"
    parse.wrapped = convert
    return parse


# --------------------------------------------------------------------------- YAML value types


def check_yaml_values(
    values: dict[str, Any], parser: HfArgumentParser, dataclass_types: Sequence[type], path, lines: dict
) -> dict[str, Any]:
    """YAML values converted to each field's type (``"3e-4"`` -> 3e-4: YAML 1.1 reads it as a
    string), or ``ConfigError`` naming file, line, key, what was expected and what was given:
    ``a.yaml:3: hidden_size: expected an integer, got a list [64]``."""
    hints = {}
    for dataclass_type in dataclass_types:
        hints.update(typing.get_type_hints(dataclass_type))
    actions = {a.dest: a for a in parser._actions}
    checked = {}
    for key, value in values.items():
        try:
            checked[key] = _convert(value, actions[key], hints.get(key))
        except _Mismatch as err:
            raise ConfigError(f"{path}:{lines.get(key, '?')}: {key}: {err}") from None
    return checked


class _Mismatch(Exception):
    pass


def _kinds(hint) -> set:
    """{int, NoneType, list, ...} of a type hint (``int | None`` -> {int, NoneType})."""
    kinds = set()
    for arg in typing.get_args(hint) or (hint,):
        origin = typing.get_origin(arg) or arg
        kinds |= _kinds(arg) if origin in (typing.Union, types.UnionType) else {origin}
    return kinds


def _convert(value, action, hint):
    kinds = _kinds(hint) if hint is not None else set()
    many = action.nargs in ("+", "*")
    if value is None:
        if type(None) in kinds or action.default is None:
            return None
        raise _Mismatch(f"expected {_expected(action, kinds)}, got null")
    if isinstance(value, dict):
        if dict in kinds:
            return value
        raise _Mismatch(f"expected {_expected(action, kinds)}, got a mapping {value!r}")
    if isinstance(value, list):
        if many or list in kinds:
            return [_scalar(v, action, kinds) for v in value]
        raise _Mismatch(f"expected {_expected(action, kinds)}, got a list {value!r}")
    converted = _scalar(value, action, kinds)
    return [converted] if many else converted


def _scalar(value, action, kinds):
    convert = _base_type(action)
    expected = _expected(action, kinds)
    if isinstance(value, (list, dict)):
        raise _Mismatch(f"expected {expected}, got {_show(value)}")
    if convert is int or convert is float:
        number = value
        if isinstance(value, str):
            try:
                number = float(value.strip())
            except ValueError:
                raise _Mismatch(f"expected {expected}, got {_show(value)}") from None
        if isinstance(number, bool) or not isinstance(number, (int, float)):
            raise _Mismatch(f"expected {expected}, got {_show(value)}")
        if convert is int:
            if not float(number).is_integer():
                raise _Mismatch(f"expected {expected}, got {_show(value)}")
            return int(number)
        return float(number)
    if isinstance(value, bool) and (bool in kinds or action.const is True):
        return value
    if isinstance(value, bool) and convert is not None and convert is not str:
        raise _Mismatch(f"expected {expected}, got {_show(value)}")
    if action.choices is not None:
        choices = [str(c) for c in action.choices]
        if str(value) not in choices:
            close = difflib.get_close_matches(str(value), choices, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise _Mismatch(f"{value!r} is not one of {', '.join(choices)}{hint}")
        return convert(str(value)) if convert else value
    if convert is None or convert is str:
        if isinstance(value, bool):
            raise _Mismatch(f"expected {expected}, got {_show(value)}")
        return str(value)
    try:
        return convert(value if isinstance(value, str) else str(value))
    except (ValueError, TypeError, AttributeError, argparse.ArgumentTypeError):
        raise _Mismatch(f"expected {expected}, got {_show(value)}") from None


def _show(value) -> str:
    """A value as the YAML file spells it: true, null, 'abc', [64]."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return "null" if value is None else repr(value)


def _base_type(action):
    convert = getattr(action, "type", None)
    return getattr(convert, "wrapped", convert)


def _expected(action, kinds) -> str:
    convert = _base_type(action)
    name = getattr(convert, "__name__", "")
    one = {
        "int": "an integer",
        "float": "a number",
        "str": "a string",
        "string_to_bool": "true or false",
    }.get(name, "a value")
    if action.choices is not None:
        one = "one of " + ", ".join(str(c) for c in action.choices)
    return f"{one} or a list of them" if action.nargs in ("+", "*") else one
