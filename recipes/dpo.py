"""Preference training (DPO) of a chat model with TRL's DPOTrainer: stage three, after pretraining and SFT.

    # tiny Qwen2 from the tiny SFT model (recipes/configs/qwen2/sft_tiny_from_pretrain.yaml), CPU
    python recipes/dpo.py --config recipes/configs/qwen2/dpo_tiny.yaml
    # LoRA: the reference is the same model with its adapter disabled (no second copy)
    python recipes/dpo.py --config recipes/configs/qwen2/dpo_tiny_lora.yaml
    mini-lm export runs/qwen2_tiny_dpo_lora --merge --output runs/qwen2_tiny_dpo_merged
    # GPUs: DeepSpeed ZeRO-2, bf16, FlashAttention-2 (auto)
    accelerate launch --config_file launch/accelerate_zero2.yaml recipes/dpo.py \
        --config recipes/configs/qwen2/dpo_qwen2.5_0.5b.yaml

The preference audit (a rendered pair with the scored answers marked, lengths, cuts, drops and why)
is printed before training. TRL's DPO keys are config keys like any other: --beta 0.2
--loss_type ipo, or SFT-regularised DPO with --loss_type sigmoid sft --loss_weights 1.0 0.5.
"""

from __future__ import annotations

import sys

from transformers import set_seed

from mini_lm.callbacks import add_recipe_callbacks, preference_shape
from mini_lm.config import DPO_ARGUMENTS, parse_config
from mini_lm.data.preference import (
    build_preference_datasets,
    load_preference_pairs,
    prepare_preference_tokenizer,
)
from mini_lm.dpo import build_dpo_trainer
from mini_lm.errors import run_main
from mini_lm.model_card import CardFacts, write_model_card
from mini_lm.models import build_model
from mini_lm.training import configure_reporting, prepare_run_dir, run_training, setup_logging
from mini_lm.validation import validate


def prepare_data(model_args, data_args, training_args):
    """(tokenizer, PreferenceData); rank 0 first, so the datasets cache is filled once."""
    with training_args.main_process_first(desc="preference data"):
        pairs = load_preference_pairs(data_args, seed=training_args.seed)
        tokenizer = prepare_preference_tokenizer(model_args, data_args, training_args.output_dir)
        data = build_preference_datasets(
            pairs, tokenizer, data_args, training_args.max_length, training_args.dataset_num_proc
        )
    if training_args.should_log:
        print(data.audit.render(), flush=True)
    data.audit.check()
    return tokenizer, data


def main(argv: list[str] | None = None) -> dict[str, float]:
    model_args, data_args, lora_args, training_args, probe_args = validate(parse_config(DPO_ARGUMENTS, argv))
    setup_logging(training_args)
    prepare_run_dir(training_args)  # resume / refuse a used dir / move the old run aside
    configure_reporting(training_args)
    set_seed(training_args.seed)

    tokenizer, data = prepare_data(model_args, data_args, training_args)
    model = build_model(model_args, tokenizer)
    trainer = build_dpo_trainer(model_args, lora_args, training_args, model, tokenizer, data.train, data.eval)
    # tokens/s, MFU, run card next to TRL's rewards / margins / accuracies; probes at every checkpoint
    add_recipe_callbacks(trainer, probe_args, preference_shape(training_args))
    metrics = run_training(trainer)
    write_model_card(
        trainer, CardFacts.of("dpo", model_args, data.audit.stats.chat.files, data.train), metrics
    )
    return metrics


if __name__ == "__main__":
    sys.exit(run_main(main))  # a user error: one `error:` line, exit 2
