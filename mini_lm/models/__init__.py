"""Build the model a recipe trains: random init from a size config, or a local pretrained dir.

    model = build_model(ModelArguments(model_family="qwen2", hidden_size=64), tokenizer)

Families register a config builder in ``CONFIG_BUILDERS``; every family returns a plain HF
model, so checkpoints load with ``AutoModelForCausalLM.from_pretrained`` and nothing else
(the BERT adapter's ``bert_next_token`` type is registered with the Auto classes on import).
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers import (
    AutoModelForCausalLM,
    GPT2Config,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Qwen2Config,
)

from ..config import ModelArguments
from ..errors import ConfigError
from ..loss import LM_LOSSES, enable_chunked_loss
from ..tokenization import autotokenizer_roundtrip_ok, stop_token_ids
from .bert_adapter import BertNextTokenConfig, BertNextTokenLM

logger = logging.getLogger(__name__)


class ModelConfigError(ConfigError):
    """A model size/family/attention request that cannot be built."""


def padded_vocab_size(tokenizer: PreTrainedTokenizerBase, multiple: int) -> int:
    """len(tokenizer) rounded up: 6400 tokens, multiple 64 -> 6400; 151665 -> 151680."""
    multiple = max(1, multiple)
    return int(math.ceil(len(tokenizer) / multiple) * multiple)


def _special_ids(tokenizer: PreTrainedTokenizerBase) -> dict:
    stops = stop_token_ids(tokenizer)
    return {
        "bos_token_id": tokenizer.bos_token_id
        if tokenizer.bos_token_id is not None
        else (stops or [None])[0],
        "eos_token_id": stops[0] if len(stops) == 1 else (stops or None),
        "pad_token_id": tokenizer.pad_token_id,
    }


def gpt2_config(args: ModelArguments, vocab_size: int, special: dict) -> PretrainedConfig:
    return GPT2Config(
        vocab_size=vocab_size,
        n_positions=args.max_position_embeddings,
        n_embd=args.hidden_size,
        n_layer=args.num_hidden_layers,
        n_head=args.num_attention_heads,
        n_inner=args.intermediate_size,  # None -> 4 x n_embd
        resid_pdrop=args.dropout,
        embd_pdrop=args.dropout,
        attn_pdrop=args.dropout,
        initializer_range=args.initializer_range,
        tie_word_embeddings=args.tie_word_embeddings,
        **special,
    )


def qwen2_config(args: ModelArguments, vocab_size: int, special: dict) -> PretrainedConfig:
    kv_heads = args.num_key_value_heads or args.num_attention_heads
    return Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=args.hidden_size,
        intermediate_size=args.intermediate_size or 4 * args.hidden_size,
        num_hidden_layers=args.num_hidden_layers,
        num_attention_heads=args.num_attention_heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=args.max_position_embeddings,
        rope_parameters={"rope_type": "default", "rope_theta": args.rope_theta},
        rms_norm_eps=args.rms_norm_eps,
        attention_dropout=args.dropout,
        initializer_range=args.initializer_range,
        tie_word_embeddings=args.tie_word_embeddings,
        use_sliding_window=False,
        **special,
    )


def bert_config(args: ModelArguments, vocab_size: int, special: dict) -> PretrainedConfig:
    """The BERT adapter's config; its [MASK]/[CLS]/[SEP] ids come from ``bind_tokenizer``."""
    return BertNextTokenConfig(
        vocab_size=vocab_size,
        hidden_size=args.hidden_size,
        num_hidden_layers=args.num_hidden_layers,
        num_attention_heads=args.num_attention_heads,
        intermediate_size=args.intermediate_size or 4 * args.hidden_size,
        max_position_embeddings=args.max_position_embeddings,
        hidden_dropout_prob=args.dropout,
        attention_probs_dropout_prob=args.dropout,
        initializer_range=args.initializer_range,
        tie_word_embeddings=args.tie_word_embeddings,
        **special,
    )


# family -> builder of its HF config from the family-neutral ModelArguments
CONFIG_BUILDERS: dict[str, Callable[[ModelArguments, int, dict], PretrainedConfig]] = {
    "gpt2": gpt2_config,
    "qwen2": qwen2_config,
    "bert": bert_config,
}
# family -> class that loads its pretrained dirs, where AutoModelForCausalLM would pick another
# (a plain bert dir would become BertLMHeadModel, a causal BERT)
PRETRAINED_LOADERS: dict[str, type] = {"bert": BertNextTokenLM}


def check_model_shape(args: ModelArguments) -> None:
    """The random-init size fields fit together; ``ModelConfigError`` names them. Run by
    ``build_model_config`` and, before any data work, by mini_lm/validation.py."""
    if args.model_family not in CONFIG_BUILDERS:
        raise ModelConfigError(
            f"unknown model_family '{args.model_family}' (known: {', '.join(sorted(CONFIG_BUILDERS))})"
        )
    if args.hidden_size % args.num_attention_heads:
        raise ModelConfigError(
            f"hidden_size={args.hidden_size} is not divisible by num_attention_heads={args.num_attention_heads}"
        )
    kv_heads = args.num_key_value_heads
    if args.model_family != "qwen2" and kv_heads not in (None, args.num_attention_heads):
        raise ModelConfigError(
            f"{args.model_family} has no grouped-query attention: leave num_key_value_heads unset"
        )
    if kv_heads and args.num_attention_heads % kv_heads:
        raise ModelConfigError(
            f"num_attention_heads={args.num_attention_heads} must be a multiple of num_key_value_heads={kv_heads}"
        )


def build_model_config(args: ModelArguments, tokenizer: PreTrainedTokenizerBase) -> PretrainedConfig:
    """HF config for random init; the vocab comes from the tokenizer (padded, see vocab_pad_multiple)."""
    check_model_shape(args)
    return CONFIG_BUILDERS[args.model_family](
        args, padded_vocab_size(tokenizer, args.vocab_pad_multiple), _special_ids(tokenizer)
    )


@functools.cache
def _log_attention_once(choice: str, reason: str) -> None:
    logger.info("attention implementation: %s (%s)", choice, reason)


@dataclass(frozen=True)
class AttentionCapabilities:
    """What this process can run: the flash_attn package, a CUDA device, torch's flex_attention."""

    flash_attn: bool
    cuda: bool
    flex_attention: bool


def attention_capabilities() -> AttentionCapabilities:
    from transformers.utils import is_torch_flex_attn_available

    return AttentionCapabilities(
        flash_attn=importlib.util.find_spec("flash_attn") is not None,
        cuda=torch.cuda.is_available(),
        flex_attention=is_torch_flex_attn_available(),
    )


def _auto_attention(caps: AttentionCapabilities, packed_rows: bool) -> tuple[str, str]:
    """The fastest exact kernel present for this batch shape, and why (see choose_attn_implementation)."""
    if caps.flash_attn and caps.cuda:
        return "flash_attention_2", "flash_attn importable, CUDA available"
    if packed_rows and caps.cuda and caps.flex_attention:
        # SDPA can only take a packed row as a dense block-diagonal mask, which rules out its flash
        # backend; flex_attention gets the document mask as a BlockMask and skips the masked blocks.
        return "flex_attention", "packed rows on CUDA without flash_attn: document-masked flex_attention"
    missing = "no CUDA device" if not caps.cuda else "flash_attn not installed"
    return "sdpa", f"fallback: {missing}" + ("" if packed_rows else ", rows without packing")


def choose_attn_implementation(
    requested: str = "auto", packed_rows: bool = False, capabilities: AttentionCapabilities | None = None
) -> str:
    """'auto' -> flash_attention_2 when flash_attn imports and CUDA is present; else flex_attention for
    packed rows (several sequences per row, position_ids restarting) on CUDA; else sdpa. Logged once.

    An explicit request the process cannot run fails here, with the reason, rather than deep inside
    transformers.
    """
    caps = capabilities or attention_capabilities()
    if requested == "auto":
        choice, reason = _auto_attention(caps, packed_rows)
    elif requested == "flash_attention_2":
        if not (caps.flash_attn and caps.cuda):
            raise ModelConfigError(
                "attn_implementation=flash_attention_2 needs the flash_attn package and a CUDA GPU "
                f"(flash_attn importable: {caps.flash_attn}, CUDA: {caps.cuda}); use 'auto' or 'sdpa'"
            )
        choice, reason = requested, "requested"
    elif requested == "flex_attention":
        if not caps.flex_attention:
            raise ModelConfigError(
                "attn_implementation=flex_attention needs torch.nn.attention.flex_attention (torch >= 2.5); "
                "use 'auto' or 'sdpa'"
            )
        choice, reason = requested, "requested"
    elif requested in ("sdpa", "eager"):
        choice, reason = requested, "requested"
    else:
        raise ModelConfigError(
            f"unknown attn_implementation '{requested}' (auto | flash_attention_2 | flex_attention | sdpa | eager)"
        )
    _log_attention_once(choice, reason)
    return choice


_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def build_model(
    args: ModelArguments,
    tokenizer: PreTrainedTokenizerBase,
    context_window: int | None = None,
    packed_rows: bool = False,
) -> PreTrainedModel:
    """Random init (model_name_or_path unset) or load a pretrained dir; set generation stop ids.

    ``context_window``: the BERT adapter's (``bert_adapter.context_window(max_len)``), bound with its
    tokenizer. ``packed_rows``: the model will train on rows holding several sequences (SFT packing),
    which steers ``attn_implementation: auto``.
    """
    if args.lm_loss not in LM_LOSSES:
        raise ModelConfigError(f"unknown lm_loss '{args.lm_loss}' ({' | '.join(LM_LOSSES)})")
    attn = choose_attn_implementation(args.attn_implementation, packed_rows)
    if args.model_name_or_path:
        if args.dtype != "auto" and args.dtype not in _DTYPES:
            raise ModelConfigError(f"unknown dtype '{args.dtype}' (auto | {' | '.join(_DTYPES)})")
        loader = PRETRAINED_LOADERS.get(args.model_family, AutoModelForCausalLM)
        model = loader.from_pretrained(
            args.model_name_or_path, attn_implementation=attn, dtype=_DTYPES.get(args.dtype, "auto")
        )
        if len(tokenizer) > model.get_input_embeddings().num_embeddings:
            logger.warning(
                "tokenizer has %d tokens, model embeddings %d: resizing",
                len(tokenizer),
                model.get_input_embeddings().num_embeddings,
            )
            model.resize_token_embeddings(padded_vocab_size(tokenizer, args.vocab_pad_multiple))
    else:
        config = build_model_config(args, tokenizer)
        model = AutoModelForCausalLM.from_config(config, attn_implementation=attn)
    if isinstance(model, BertNextTokenLM):
        model.bind_tokenizer(tokenizer, context_window)
    elif context_window is not None:
        raise ModelConfigError(f"context_window is the BERT adapter's; a {type(model).__name__} has none")
    _set_lm_loss(model, args)
    set_generation_ids(model, tokenizer)
    if not autotokenizer_roundtrip_ok(tokenizer, model.config.model_type):
        logger.warning(
            "plain AutoTokenizer will NOT reproduce this tokenizer's ids from a %s checkpoint dir "
            "(transformers swaps in its own pre-tokenizer); load checkpoints with "
            "mini_lm.tokenization.load_tokenizer or PreTrainedTokenizerFast.from_pretrained",
            model.config.model_type,
        )
    logger.info(
        "model: %s, %.2fM parameters (%.2fM without embeddings)",
        type(model).__name__,
        model.num_parameters() / 1e6,  # tied weights once
        model.num_parameters(exclude_embeddings=True) / 1e6,
    )
    warn_embedding_share(model, tokenizer)
    return model


EMBEDDING_SHARE_WARNING = 0.8  # beyond this the vocabulary, not the transformer, is the model


def _numel(p) -> int:
    """Elements of a parameter; under ZeRO-3 each rank holds a shard (numel 0), ``ds_numel`` the whole."""
    return getattr(p, "ds_numel", p.numel())


def warn_embedding_share(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> float:
    """Warn when the vocabulary's embedding (and an untied head) are most of the parameters: a tiny
    model with a 151k-token tokenizer spends its steps on the vocabulary. Returns the share."""
    embedding = model.get_input_embeddings().weight
    head = model.get_output_embeddings()
    rows = _numel(embedding) + (
        _numel(head.weight) if head is not None and head.weight is not embedding else 0
    )
    total = sum(_numel(p) for p in model.parameters())  # shared (tied) tensors once
    share = rows / max(total, 1)
    if share > EMBEDDING_SHARE_WARNING:
        logger.warning(
            "%.0f%% of the model's %.2fM parameters are the embedding of a %d-token vocabulary "
            "(%d rows x %d): the transformer is %.2fM. For a model this small use a smaller tokenizer "
            "(tokenizer_vocab_size: 8000 trains one on the corpus) or a larger model",
            100 * share,
            total / 1e6,
            len(tokenizer),
            model.config.vocab_size,
            model.config.hidden_size,
            (total - rows) / 1e6,
        )
    return share


def _set_lm_loss(model: PreTrainedModel, args: ModelArguments) -> None:
    if args.lm_loss == "chunked":
        if isinstance(model, BertNextTokenLM):
            raise ModelConfigError("lm_loss=chunked is for causal LMs; the BERT adapter takes lm_loss: full")
        enable_chunked_loss(model, args.lm_loss_chunk_size)


def set_generation_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    """Make plain ``model.generate`` stop at <|im_end|> / <|endoftext|> and pad with the pad id."""
    stops = stop_token_ids(tokenizer)
    if stops:
        model.generation_config.eos_token_id = stops if len(stops) > 1 else stops[0]
    if tokenizer.pad_token_id is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
