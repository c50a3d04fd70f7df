"""The recipes' instrumentation is plain callbacks, attached by one call (add_recipe_callbacks) to any
Trainer: the same tokens/s, MFU, eval perplexity (LM losses only) and run_info.json under the HF
Trainer, TRL's SFTTrainer and TRL's DPOTrainer, reaching the reporters and trainer_state.json."""

import json

import pytest
import torch
from datasets import Dataset
from transformers import Qwen2ForCausalLM, Trainer, TrainerCallback

from mini_lm.callbacks import TrainingShape, add_recipe_callbacks, preference_shape
from mini_lm.config import MiniLMDPOConfig, MiniLMTrainingArguments
from mini_lm.data.packing import CausalLMCollator

from .conftest import tiny_qwen2_config

SEQ = 16
COMMON = dict(
    per_device_train_batch_size=4,
    per_device_eval_batch_size=4,
    max_steps=4,
    logging_steps=2,
    report_to="none",
    save_strategy="no",
    disable_tqdm=True,
    peak_tflops=0.001,  # a CPU "peak" so MFU is logged
    seed=0,
)


class Recorder(TrainerCallback):
    """Stands for a reporter (TensorBoard, W&B, console): what did it receive?"""

    def __init__(self):
        self.logs = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.logs.append(dict(logs))


@pytest.fixture
def tiny_model(tiny_tokenizer, tmp_path):
    config = tiny_qwen2_config(
        tiny_tokenizer, pad_token_id=tiny_tokenizer.pad_token_id, eos_token_id=tiny_tokenizer.eos_token_id
    )
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).save_pretrained(tmp_path / "model")  # TRL builds its reference from a path
    return Qwen2ForCausalLM.from_pretrained(tmp_path / "model")


def token_rows(tokenizer, n: int = 24) -> Dataset:
    ids = tokenizer("王伟出生于1987年3月5日。他毕业于北京大学。" * 4)["input_ids"]
    return Dataset.from_list([{"input_ids": ids[i : i + SEQ]} for i in range(n)])


def check_instrumented(out, recorder: Recorder, trainer_name: str, tokens_per_step: int) -> list[dict]:
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    train_logs = [h for h in history if "loss" in h]
    assert len(train_logs) == 2
    for h in train_logs:  # in trainer_state.json ...
        assert h["tokens_per_second"] > 0 and h["tokens_per_second_per_device"] > 0 and 0 < h["mfu"]
    seen = [log for log in recorder.logs if "loss" in log]  # ... and in what the reporters got
    assert [log["tokens_per_second"] for log in seen] == [h["tokens_per_second"] for h in train_logs]
    info = json.loads((out / "run_info.json").read_text())
    assert info["trainer"] == trainer_name and info["world_size"] == 1 and info["ranks_see_distinct_data"]
    assert info["tokens_per_step"] == tokens_per_step and info["global_batch_size"] == 4
    return train_logs


@pytest.mark.parametrize("kind", ["Trainer", "SFTTrainer"])
def test_callbacks_instrument_the_hf_trainer_and_trls_sft_trainer(kind, tiny_model, tiny_tokenizer, tmp_path):
    out, recorder = tmp_path / "run", Recorder()
    rows = token_rows(tiny_tokenizer)
    if kind == "Trainer":
        args = MiniLMTrainingArguments(output_dir=str(out), **COMMON)
        trainer = Trainer(
            model=tiny_model,
            args=args,
            train_dataset=rows,
            eval_dataset=rows.select(range(8)),
            data_collator=CausalLMCollator(pad_token_id=tiny_tokenizer.pad_token_id),
            processing_class=tiny_tokenizer,
            callbacks=[recorder],
        )
    else:
        from trl import SFTConfig, SFTTrainer

        args = SFTConfig(
            output_dir=str(out),
            **{k: v for k, v in COMMON.items() if k != "peak_tflops"},
            include_num_input_tokens_seen="non_padding",
            bf16=False,
            gradient_checkpointing=False,
            use_cpu=True,
            max_length=SEQ,
        )
        args.peak_tflops = 0.001  # SFTConfig has no such field; the callbacks read it where present
        trainer = SFTTrainer(
            model=tiny_model,
            args=args,
            train_dataset=rows,
            eval_dataset=rows.select(range(8)),
            processing_class=tiny_tokenizer,
            callbacks=[recorder],
        )
    add_recipe_callbacks(trainer, None, TrainingShape(seq_len=SEQ))
    trainer.train()
    trainer.save_state()
    check_instrumented(out, recorder, kind, tokens_per_step=4 * SEQ)
    metrics = trainer.evaluate()
    assert metrics["eval_perplexity"] == pytest.approx(
        torch.tensor(metrics["eval_loss"]).exp().item(), rel=1e-3
    )


def test_callbacks_instrument_trls_dpo_trainer(tiny_model, tiny_tokenizer, tmp_path):
    from trl import DPOTrainer

    out, recorder = tmp_path / "run", Recorder()
    user = [{"role": "user", "content": "王伟出生于哪一年？"}]
    pairs = Dataset.from_list(
        [
            {
                "prompt": user,
                "chosen": [{"role": "assistant", "content": f"{1980 + i}年。"}],
                "rejected": [{"role": "assistant", "content": "北京大学。"}],
            }
            for i in range(12)
        ]
    )
    args = MiniLMDPOConfig(output_dir=str(out), **COMMON, max_length=SEQ * 2, eval_strategy="no")
    trainer = DPOTrainer(  # TRL's own trainer, its own tokenization: nothing of mini_lm but the callbacks
        model=tiny_model,
        args=args,
        train_dataset=pairs,
        eval_dataset=pairs.select(range(4)),
        processing_class=tiny_tokenizer,
        callbacks=[recorder],
    )
    add_recipe_callbacks(trainer, None, preference_shape(args))
    trainer.train()
    trainer.save_state()
    logs = check_instrumented(out, recorder, "DPOTrainer", tokens_per_step=4 * 2 * SEQ * 2)
    assert all(
        {"rewards/accuracies", "rewards/margins", "rewards/chosen", "rewards/rejected"} <= set(h)
        for h in logs
    )
    metrics = trainer.evaluate()
    assert "eval_rewards/margins" in metrics and "eval_perplexity" not in metrics  # a DPO loss is no LM loss
