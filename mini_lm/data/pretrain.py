"""Pretraining data: corpus -> documents -> (train, eval) packed blocks."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator

import pyarrow.compute as pc
from datasets import Dataset, IterableDataset

from ..config import PretrainDataArguments
from ..tokenization import document_separator_id
from .corpus import CorpusError, load_corpus
from .packing import _packed_examples, pack_dataset, tokenize_dataset

logger = logging.getLogger(__name__)


def load_documents(args: PretrainDataArguments, files: list[str]):
    return load_corpus(
        files,
        text_field=args.text_field,
        sample_by=args.text_sample_by,
        streaming=args.streaming,
        hub_split=args.hub_split,
        min_chars=args.min_document_chars,
    )


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
    if isinstance(train_docs, IterableDataset):
        tokenized = tokenize_dataset(train_docs, tokenizer, sep)
        train = IterableDataset.from_generator(
            _packed_examples, gen_kwargs={"tokenized": tokenized, "block_size": args.block_size}
        )
        logger.info("pretraining data: streaming %s, block_size %d", args.train_files, args.block_size)
    else:
        train = _pack(train_docs, tokenizer, sep, args, "train")
    eval_ds = _pack(eval_docs, tokenizer, sep, args, "eval") if eval_docs is not None else None
    return train, eval_ds


def _pack(docs: Dataset, tokenizer, sep: int, args: PretrainDataArguments, name: str) -> Dataset:
    tokenized = tokenize_dataset(docs, tokenizer, sep, num_proc=args.num_proc)
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
    docs = load_corpus(
        args.train_files,
        text_field=args.text_field,
        sample_by=args.text_sample_by,
        hub_split=args.hub_split,
        min_chars=args.min_document_chars,
    )
    yield from docs["text"]
