"""Tokenize documents and pack them into fixed-length blocks with a separator after each.

    docs [[5, 6, 7], [8, 9]] + sep 0 each, block 3  ->  [5, 6, 7] [0, 8, 9] (the lone final 0 holds no target)

Every token and every document boundary survives: blocks are cut from one stream, the last
(shorter) block is kept and padded by the collator, unless it is a single token (no target). Two implementations share that contract:
``pack_dataset`` (Arrow, in memory, fast) and ``pack_stream`` (a generator for streaming corpora).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from datasets import Dataset

from ..labels import IGNORE_INDEX

MIN_BLOCK = 2  # a block needs two tokens to hold one next-token target


@dataclass
class Tokenize:
    """``datasets.map`` function: text -> input_ids with ``separator_id`` appended (picklable)."""

    tokenizer: object
    separator_id: int

    def __call__(self, batch: dict) -> dict:
        ids = self.tokenizer(batch["text"], add_special_tokens=False, verbose=False)["input_ids"]
        return {"input_ids": [doc + [self.separator_id] for doc in ids]}


def tokenize_dataset(dataset, tokenizer, separator_id: int, num_proc: int | None = None):
    """Map-style or iterable dataset with a ``text`` column -> ``input_ids`` column."""
    kwargs = {"num_proc": num_proc, "desc": "tokenize"} if isinstance(dataset, Dataset) else {}
    return dataset.map(Tokenize(tokenizer, separator_id), batched=True, remove_columns=["text"], **kwargs)


def pack_dataset(tokenized: Dataset, block_size: int) -> Dataset:
    """Concatenate all ``input_ids`` and cut into ``block_size`` rows (last row may be shorter)."""
    if block_size < MIN_BLOCK:
        raise ValueError(f"block_size must be >= {MIN_BLOCK}, got {block_size}")
    column = tokenized.with_format("arrow")[:].column("input_ids")
    flat = pc.list_flatten(column).combine_chunks() if len(column) else pa.array([], pa.int32())
    starts = np.arange(0, len(flat), block_size, dtype=np.int64)
    ends = np.minimum(starts + block_size, len(flat))
    keep = ends - starts >= MIN_BLOCK  # only the tail can be short; a 1-token tail holds no target
    starts, ends = starts[keep], ends[keep]
    offsets = np.append(starts, ends[-1] if len(ends) else 0)
    blocks = pa.LargeListArray.from_arrays(pa.array(offsets), flat.slice(0, int(offsets[-1])))
    return Dataset(pa.table({"input_ids": blocks}))


def pack_stream(docs: Iterable[list[int]], block_size: int) -> Iterator[list[int]]:
    """Generator twin of ``pack_dataset`` for streaming: yields blocks as tokens arrive."""
    if block_size < MIN_BLOCK:
        raise ValueError(f"block_size must be >= {MIN_BLOCK}, got {block_size}")
    buffer: list[int] = []
    for doc in docs:
        buffer.extend(doc)
        while len(buffer) >= block_size:
            yield buffer[:block_size]
            buffer = buffer[block_size:]
    if len(buffer) >= MIN_BLOCK:
        yield buffer


def _packed_examples(tokenized, block_size: int) -> Iterator[dict]:
    yield from (
        {"input_ids": block} for block in pack_stream((ex["input_ids"] for ex in tokenized), block_size)
    )


def pad_id(tokenizer) -> int:
    """Padding id: the tokenizer's pad, else the document separator (padding is masked anyway)."""
    from ..tokenization import document_separator_id

    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else document_separator_id(tokenizer)


@dataclass
class CausalLMCollator:
    """Right-pad a batch; labels are input_ids with padding set to -100.

    Padding is found through the lengths, not the pad id, so an eos token that doubles as pad
    (GPT-2, our BPE) is still a training target.
    """

    pad_token_id: int
    pad_to_multiple_of: int | None = None

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        lengths = [len(f["input_ids"]) for f in features]
        width = max(lengths)
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        input_ids = torch.full((len(features), width), self.pad_token_id, dtype=torch.long)  # (B, T)
        attention_mask = torch.zeros((len(features), width), dtype=torch.long)
        for row, (feature, n) in enumerate(zip(features, lengths)):
            input_ids[row, :n] = torch.as_tensor(feature["input_ids"], dtype=torch.long)
            attention_mask[row, :n] = 1
        labels = input_ids.masked_fill(attention_mask == 0, IGNORE_INDEX)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
