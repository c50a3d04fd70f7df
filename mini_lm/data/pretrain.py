"""Pretraining data: corpus -> documents -> (train, eval) packed blocks."""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Iterator

import pyarrow.compute as pc
from datasets import Dataset, IterableDataset

from ..config import PretrainDataArguments
from ..tokenization import document_separator_id, special_token_texts
from .corpus import CorpusError, load_corpus
from .packing import _packed_examples, pack_dataset, tokenize_dataset

logger = logging.getLogger(__name__)


def corpus_options(args: PretrainDataArguments) -> dict:
    """The ``load_corpus`` keywords a recipe's data arguments set (how files become documents)."""
    return dict(
        text_field=args.text_field,
        text_template=args.text_template,
        text_joiner=args.text_joiner,
        sample_by=args.text_sample_by,
        document_separator=args.document_separator,
        encoding=args.encoding,
        hub_split=args.hub_split,
        min_chars=args.min_document_chars,
    )


def load_documents(args: PretrainDataArguments, files: list[str]):
    return load_corpus(files, streaming=args.streaming, **corpus_options(args))


def split_documents(args: PretrainDataArguments, seed: int):
    """(train_docs, eval_docs or None). Eval docs never appear in training."""
    train = load_documents(args, args.train_files)
    if args.max_train_documents is not None:
        train = (
            train.take(args.max_train_documents)
            if isinstance(train, IterableDataset)
            else train.select(range(min(args.max_train_documents, len(train))))
        )
    if args.validation_files:
        return train, load_documents(args, args.validation_files)
    if args.validation_split <= 0:
        return train, None
    if isinstance(train, IterableDataset):
        # The first documents of the stream are held out; materialised so eval is repeatable.
        held = list(train.take(args.max_eval_documents))
        return train.skip(args.max_eval_documents), Dataset.from_list(held)
    n_eval = min(args.max_eval_documents, max(1, math.ceil(len(train) * args.validation_split)))
    if n_eval >= len(train):
        raise CorpusError(
            f"corpus has {len(train)} documents: too few to hold out {n_eval} for validation "
            "(add documents, lower validation_split, or give validation_files)"
        )
    parts = train.train_test_split(test_size=n_eval, seed=seed, shuffle=True)
    return parts["train"], parts["test"]


def build_pretrain_datasets(args: PretrainDataArguments, tokenizer, seed: int = 42):
    """Tokenize with ``datasets.map(num_proc)`` and pack into ``block_size`` blocks.

    Returns (train, eval): map-style ``Dataset``s, or an ``IterableDataset`` for train when
    streaming. Logs documents, tokens and blocks so a run on a tiny corpus is obvious.
    """
    train_docs, eval_docs = split_documents(args, seed)
    sep = document_separator_id(tokenizer)
    warn_special_token_text(train_docs, tokenizer, args.parse_special_tokens)
    if isinstance(train_docs, IterableDataset):
        tokenized = tokenize_dataset(
            train_docs, tokenizer, sep, parse_special_tokens=args.parse_special_tokens
        )
        train = IterableDataset.from_generator(
            _packed_examples, gen_kwargs={"tokenized": tokenized, "block_size": args.block_size}
        )
        logger.info("pretraining data: streaming %s, block_size %d", args.train_files, args.block_size)
    else:
        train = _pack(train_docs, tokenizer, sep, args, "train")
    eval_ds = _pack(eval_docs, tokenizer, sep, args, "eval") if eval_docs is not None else None
    return train, eval_ds


def warn_special_token_text(docs, tokenizer, parsed: bool, sample: int = 10_000) -> None:
    """Say when documents hold special-token strings, and what becomes of them (plain text by default)."""
    specials = special_token_texts(tokenizer)
    found: Counter = Counter()
    rows = (
        docs.take(sample) if isinstance(docs, IterableDataset) else docs.select(range(min(sample, len(docs))))
    )
    for text in (row["text"] for row in rows):
        found.update(token for token in specials if token in text)
    if not found:
        return
    ordered = sorted(found.items(), key=lambda item: (-item[1], item[0]))[:5]
    seen = ", ".join(f"{token} in {n}" for token, n in ordered)
    if parsed:
        logger.info("parse_special_tokens: special-token strings in documents become the tokens (%s)", seen)
        return
    logger.warning(
        "documents hold special-token strings (%s of the first %d documents): they are encoded as plain "
        "text. If your data marks turns or documents with them on purpose (MiniMind-style), set "
        "parse_special_tokens: true; a .txt separator belongs in document_separator",
        seen,
        min(sample, len(docs)) if isinstance(docs, Dataset) else sample,
    )


def _pack(docs: Dataset, tokenizer, sep: int, args: PretrainDataArguments, name: str) -> Dataset:
    tokenized = tokenize_dataset(
        docs, tokenizer, sep, num_proc=args.num_proc, parse_special_tokens=args.parse_special_tokens
    )
    blocks = pack_dataset(tokenized, args.block_size)
    if len(blocks) == 0:
        raise CorpusError(f"{name} corpus tokenized to no usable block ({len(docs)} documents)")
    n_tokens = pc.sum(pc.list_value_length(blocks.data.column("input_ids"))).as_py()
    logger.info(
        "%s data: %d documents -> %d tokens -> %d blocks of <= %d",
        name,
        len(docs),
        n_tokens,
        len(blocks),
        args.block_size,
    )
    return blocks


def corpus_texts(args: PretrainDataArguments) -> Iterator[str]:
    """The training documents' texts, to train a tokenizer on (the corpus is read when iterated).

    ``prepare_tokenizer(model_args, out, data_args.tokenizer_vocab_size, corpus_texts(data_args))``
    """
    yield from load_corpus(args.train_files, **corpus_options(args))["text"]
