"""Windows for the BERT adapter: corpus -> packed blocks -> (context, next token) rows.

    block [5, 6, 7, 8], context length 2  ->  {"input_ids": [6, 7], "labels": 8}

The corpus is tokenized and packed exactly as for pretraining (documents separated by the
tokenizer's eos, [SEP] for BERT), in blocks of ``context_window + 1`` tokens: up to
``context_window`` context tokens and the one that follows. The caller names the window
(``mini_lm.models.bert_adapter.context_window(max_len)``: data never imports models). Each block gives one row (the scheme predicts one token
per forward pass); its context length is drawn once, from a seeded generator, so train and eval
rows are the same in every epoch and every run.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import numpy as np
import torch
from datasets import Dataset

from ..config import MLMArguments, PretrainDataArguments
from .pretrain import build_pretrain_datasets

logger = logging.getLogger(__name__)


def cut_windows(blocks: Dataset, min_context: int, seed: int, desc: str = "cut windows") -> Dataset:
    """Blocks -> rows of (context, next token); context lengths uniform in [min_context, len(block) - 1].

    ``[[5, 6, 7, 8]]`` with min_context 3 -> ``{"input_ids": [[5, 6, 7]], "labels": [8]}``
    """

    def cut(batch: dict, indices: list[int]) -> dict:
        rng = np.random.default_rng([seed, indices[0]])  # a batch's draws depend on its position only
        contexts, labels = [], []
        for block in batch["input_ids"]:
            longest = len(block) - 1
            length = int(rng.integers(min(min_context, longest), longest + 1))
            contexts.append(block[longest - length : longest])
            labels.append(block[longest])
        return {"input_ids": contexts, "labels": labels}

    return blocks.map(cut, batched=True, with_indices=True, desc=desc)


def build_next_token_datasets(
    data_args: PretrainDataArguments, mlm_args: MLMArguments, tokenizer, context_window: int, seed: int = 42
) -> tuple[Dataset, Dataset | None]:
    """(train, eval) rows for recipes/mlm.py; ``max_train_samples`` draws that many windows at random."""
    if data_args.streaming:
        raise ValueError(
            "recipes/mlm.py does not stream: its windows are drawn at random from the whole corpus"
        )
    packing = dataclasses.replace(data_args, block_size=context_window + 1)
    train_blocks, eval_blocks = build_pretrain_datasets(packing, tokenizer, seed=seed)
    if mlm_args.max_train_samples is not None:
        if mlm_args.max_train_samples > len(train_blocks):
            logger.warning(
                "max_train_samples=%d but the corpus gives %d windows: using all of them",
                mlm_args.max_train_samples,
                len(train_blocks),
            )
        n = min(mlm_args.max_train_samples, len(train_blocks))
        train_blocks = train_blocks.shuffle(seed=seed).select(range(n))
    train = cut_windows(train_blocks, mlm_args.min_context, seed, desc="cut train windows")
    eval_ds = (
        cut_windows(eval_blocks, mlm_args.min_context, seed + 1, desc="cut eval windows")
        if eval_blocks is not None
        else None
    )
    logger.info(
        "next-token windows: %d train, %s eval, context %d-%d tokens",
        len(train),
        len(eval_ds) if eval_ds is not None else "no",
        mlm_args.min_context,
        context_window,
    )
    return train, eval_ds


@dataclass
class NextTokenCollator:
    """Left-pad contexts (the adapter appends [MASK] after the last column); labels stay one per row."""

    tokenizer: object

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        batch = self.tokenizer.pad(
            [{"input_ids": f["input_ids"]} for f in features], padding_side="left", return_tensors="pt"
        )  # (B, T)
        batch["labels"] = torch.tensor([f["labels"] for f in features], dtype=torch.long)  # (B,)
        return dict(batch)
