"""mini_lm/training.py: what every recipe does around Trainer.train()."""

import logging

from datasets import Dataset

from mini_lm.config import MiniLMTrainingArguments
from mini_lm.training import warn_data_reuse


def test_a_run_that_passes_over_its_data_too_often_is_named(tmp_path, caplog):
    """100 epochs over 134 tokens once trained without a word."""
    blocks = Dataset.from_dict({"input_ids": [list(range(30))] * 4 + [list(range(14))]})  # 134 tokens
    args = MiniLMTrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=4, max_steps=125)
    with caplog.at_level(logging.WARNING, logger="mini_lm"):
        assert warn_data_reuse(args, blocks) == 100
    assert (
        "passes over its training data 100 times (max_steps 125 x 4 rows per step, 5 rows, 134 tokens)"
        in (caplog.text)
    )
    caplog.clear()
    few = MiniLMTrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=4, max_steps=20)
    with caplog.at_level(logging.WARNING, logger="mini_lm"):
        assert warn_data_reuse(few, blocks) == 16
    assert not caplog.text
    epochs = MiniLMTrainingArguments(output_dir=str(tmp_path), num_train_epochs=30)
    assert warn_data_reuse(epochs, blocks) == 30
    assert warn_data_reuse(args, blocks.to_iterable_dataset()) is None  # a stream has no length
