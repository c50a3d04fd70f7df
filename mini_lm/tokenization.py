"""Tokenizers: train a byte-level BPE with ChatML specials, or load any local HF tokenizer dir."""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

logger = logging.getLogger(__name__)

ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS = [ENDOFTEXT, IM_START, IM_END]

# ChatML. The {% generation %} markers let apply_chat_template(..., return_assistant_tokens_mask=True)
# mark every assistant turn *including* its closing <|im_end|>, so the model learns to stop.
CHATML_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message['role'] == 'assistant' %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- generation %}{{- message['content'] + '<|im_end|>' }}{%- endgeneration %}"
    "{{- '\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

# Qwen2's pre-tokenizer: English contractions, letter runs, single digits, punctuation, whitespace.
PRETOKENIZE_REGEX = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""

# Files a loadable HF tokenizer dir has: a fast tokenizer.json, or a slow vocabulary.
_TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "vocab.txt", "tokenizer.model", "spiece.model")


class TokenizerError(ValueError):
    """A tokenizer that cannot be trained or loaded as asked."""


def train_bpe_tokenizer(
    texts: Iterable[str],
    vocab_size: int,
    output_dir: str | os.PathLike | None = None,
    min_frequency: int = 2,
    model_max_length: int = 2048,
    split_han: bool = True,
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE with ChatML specials and chat template.

    Pre-tokenization is Qwen2's (NFC, regex, single digits, byte-level). With ``split_han`` every
    Chinese character is also its own pre-token, so Chinese is character-level (as in GPT-2
    Chinese) and merges never span a word boundary: "王伟出生在|厦门" tokenizes the same as a
    prompt and inside a sentence. Ids 0,1,2 are <|endoftext|>, <|im_start|>, <|im_end|>;
    <|endoftext|> doubles as bos/eos/pad. Saved as a plain ``PreTrainedTokenizerFast`` dir.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    if vocab_size < 256 + len(SPECIAL_TOKENS):
        raise TokenizerError(
            f"vocab_size={vocab_size} is too small: byte-level BPE needs at least "
            f"{256 + len(SPECIAL_TOKENS)} (256 bytes + special tokens)"
        )
    # The Qwen2 pipeline (NFC, regex split with single digits, byte-level): AutoTokenizer rebuilds
    # exactly this pipeline for model dirs whose config says qwen2, so ids survive the round trip.
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    # No merge can span two Han characters, so the Qwen2Tokenizer that AutoTokenizer builds
    # for qwen2 dirs (Qwen2 regex only) still produces exactly these ids.
    han = [pre_tokenizers.Split(Regex(r"\p{Han}"), behavior="isolated")] if split_han else []
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        han
        + [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=True,
    )
    seen = _CountingIterator(texts)
    tok.train_from_iterator(seen, trainer=trainer)
    if seen.count == 0:
        raise TokenizerError("no text to train the tokenizer on (the corpus is empty)")
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=ENDOFTEXT,
        eos_token=ENDOFTEXT,
        pad_token=ENDOFTEXT,
        unk_token=None,
        additional_special_tokens=[IM_START, IM_END],
        model_max_length=model_max_length,
        chat_template=CHATML_TEMPLATE,
    )
    logger.info("trained byte-level BPE: %d tokens from %d texts", len(fast), seen.count)
    if output_dir is not None:
        save_tokenizer(fast, output_dir)
    return fast


class _CountingIterator:
    def __init__(self, texts: Iterable[str]):
        self._texts, self.count = texts, 0

    def __iter__(self) -> Iterator[str]:
        for text in self._texts:
            self.count += 1
            yield text


def save_tokenizer(tokenizer: PreTrainedTokenizerBase, output_dir: str | os.PathLike) -> None:
    """save_pretrained, pinning tokenizer_class so AutoTokenizer returns the same (fast) class.

    Without the pin, AutoTokenizer on a model dir whose config.json says ``qwen2`` builds a
    Qwen2Tokenizer with Qwen2's pre-tokenizer regex, and our ids silently change.
    """
    tokenizer.save_pretrained(output_dir)
    cfg_path = Path(output_dir) / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    if isinstance(tokenizer, PreTrainedTokenizerFast) and type(tokenizer) is PreTrainedTokenizerFast:
        cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
        cfg_path.write_text(json.dumps(cfg, ensure_ascii=False, indent=2), encoding="utf-8")


def load_tokenizer(name_or_path: str | os.PathLike, **kwargs) -> PreTrainedTokenizerBase:
    """Load a local HF tokenizer dir (or a hub id, for users with hub access).

    A local dir without any tokenizer file fails with the list of files it should contain.
    """
    path = Path(name_or_path)
    if path.exists():
        if not path.is_dir():
            raise TokenizerError(f"tokenizer path {path} is a file; give the directory that holds it")
        if not any((path / f).exists() for f in _TOKENIZER_FILES):
            present = sorted(p.name for p in path.iterdir())[:10]
            raise TokenizerError(
                f"{path} is not a tokenizer dir: none of {', '.join(_TOKENIZER_FILES)} found "
                f"(it holds: {', '.join(present) or 'nothing'})"
            )
    elif not looks_like_hub_id(str(name_or_path)):
        raise TokenizerError(f"tokenizer dir not found: {name_or_path}")
    try:
        if (path / "tokenizer.json").is_file():
            # Faithful to the saved pipeline. AutoTokenizer would rebuild some classes (Qwen2Tokenizer
            # for any dir whose config.json says qwen2) with their own pre-tokenizer.
            return PreTrainedTokenizerFast.from_pretrained(str(path), **kwargs)
        return AutoTokenizer.from_pretrained(str(name_or_path), **kwargs)
    except OSError as err:
        raise TokenizerError(f"could not load tokenizer '{name_or_path}': {err}") from err


ROUNDTRIP_PROBE = "Hello, world! It's 2024-05-06: 12345 个字，你好世界。\n\n  spaced   text"


def autotokenizer_roundtrip_ok(tokenizer: PreTrainedTokenizerBase, model_type: str) -> bool:
    """Will plain ``AutoTokenizer`` on a ``model_type`` checkpoint dir give this tokenizer's ids?

    transformers 5 swaps in the registered class for some model types (qwen2 -> Qwen2Tokenizer,
    with Qwen2's regex); a tokenizer with another pre-tokenizer then changes ids after saving.
    """
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)
        Path(tmp, "config.json").write_text(json.dumps({"model_type": model_type}), encoding="utf-8")
        reloaded = AutoTokenizer.from_pretrained(tmp)
    return reloaded(ROUNDTRIP_PROBE)["input_ids"] == tokenizer(ROUNDTRIP_PROBE)["input_ids"]


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def looks_like_hub_id(name: str) -> bool:
    """'Qwen/Qwen2.5-0.5B' -> True; './tok', '/abs/tok', 'a/b/c' -> False."""
    return bool(_HUB_ID.match(name)) and not name.startswith((".", "/", "~"))


def document_separator_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """Id placed between packed documents: <|endoftext|> when the vocab has it, else eos."""
    vocab = tokenizer.get_vocab()
    if ENDOFTEXT in vocab:
        return vocab[ENDOFTEXT]
    if tokenizer.eos_token_id is None:
        raise TokenizerError("tokenizer has neither <|endoftext|> nor an eos token to separate documents")
    return tokenizer.eos_token_id


def stop_token_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Ids that end a generation: eos, <|endoftext|> and <|im_end|> where the vocab has them."""
    vocab = tokenizer.get_vocab()
    ids = []
    for token in (tokenizer.eos_token, ENDOFTEXT, IM_END):
        if token in vocab and vocab[token] not in ids:
            ids.append(vocab[token])
    return ids
