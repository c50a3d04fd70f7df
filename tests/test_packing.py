import random

import pytest
import torch
from datasets import Dataset

from mini_lm.data.packing import CausalLMCollator, pack_dataset, pack_stream, tokenize_dataset

SEP = 0


def random_docs(seed: int, n: int = 40) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(1, 50) for _ in range(rng.randrange(1, 30))] for _ in range(n)]


@pytest.mark.parametrize("block_size", [2, 7, 16, 64, 1000])
@pytest.mark.parametrize("seed", [0, 1])
def test_every_token_and_boundary_survives(block_size, seed):
    docs = random_docs(seed)
    stream = [tok for doc in docs for tok in doc + [SEP]]
    blocks = pack_dataset(Dataset.from_dict({"input_ids": [d + [SEP] for d in docs]}), block_size)[
        "input_ids"
    ]
    assert all(len(b) == block_size for b in blocks[:-1]) and 2 <= len(blocks[-1]) <= block_size
    flat = [tok for block in blocks for tok in block]
    lost = len(stream) - len(flat)
    assert lost in (0, 1) and flat == stream[: len(flat)]  # only a 1-token tail (no target) may go
    if lost:
        assert stream[-1] == SEP and len(stream) % block_size == 1
    # EOS placement: exactly one separator after each document, documents recoverable in order
    recovered, current = [], []
    for tok in flat + [SEP] * lost:
        if tok == SEP:
            recovered.append(current)
            current = []
        else:
            current.append(tok)
    assert recovered == docs and current == []


@pytest.mark.parametrize("block_size", [2, 5, 33])
def test_stream_and_arrow_packing_agree(block_size):
    docs = [d + [SEP] for d in random_docs(7)]
    arrow = pack_dataset(Dataset.from_dict({"input_ids": docs}), block_size)["input_ids"]
    assert list(pack_stream(docs, block_size)) == arrow


def test_packing_after_select_respects_indices():
    ds = Dataset.from_dict({"input_ids": [[1, 0], [2, 2, 0], [3, 0]]}).select([2, 0])
    assert pack_dataset(ds, 4)["input_ids"] == [[3, 0, 1, 0]]


def test_tokenize_appends_separator(tiny_tokenizer):
    ds = tokenize_dataset(Dataset.from_dict({"text": ["王伟", "Wei Wang"]}), tiny_tokenizer, separator_id=0)
    for ids, text in zip(ds["input_ids"], ["王伟", "Wei Wang"]):
        assert ids[-1] == 0 and tiny_tokenizer.decode(ids[:-1]) == text


def test_collator_keeps_eos_targets_when_pad_equals_eos():
    # eos == pad == 0 (GPT-2 / our BPE): padding must be found by length, not by id.
    batch = CausalLMCollator(pad_token_id=0)([{"input_ids": [5, 6, 0, 7]}, {"input_ids": [8, 0]}])
    assert batch["input_ids"].tolist() == [[5, 6, 0, 7], [8, 0, 0, 0]]
    assert batch["labels"].tolist() == [[5, 6, 0, 7], [8, 0, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    # negative control: masking by pad id (the classic bug) would drop the real eos targets
    naive = batch["input_ids"].masked_fill(batch["input_ids"] == 0, -100)
    assert not torch.equal(naive, batch["labels"])


def test_collator_pad_to_multiple():
    batch = CausalLMCollator(pad_token_id=9, pad_to_multiple_of=8)([{"input_ids": [1, 2, 3]}])
    assert batch["input_ids"].shape == (1, 8) and batch["labels"][0, 3:].eq(-100).all()
