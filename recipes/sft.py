"""Supervised fine-tuning on chat data with assistant-only loss (HF Trainer).

    # tiny Qwen2 from scratch on real SFT data, CPU
    python recipes/sft.py --config recipes/configs/qwen2/sft_tiny_scratch.yaml
    # from a pretraining checkpoint, LoRA
    python recipes/sft.py --config recipes/configs/qwen2/sft_tiny_from_pretrain.yaml --model_name_or_path runs/qwen2_tiny
    python recipes/sft.py --config recipes/configs/qwen2/sft_tiny_lora.yaml --model_name_or_path runs/qwen2_tiny
    mini-lm export runs/qwen2_tiny_sft_lora --merge --output runs/qwen2_tiny_sft_merged
    # GPUs: DeepSpeed ZeRO-2, bf16, FlashAttention-2, packing
    accelerate launch --config_file launch/accelerate_zero2.yaml recipes/sft.py \
        --config recipes/configs/qwen2/sft_qwen2.5_0.5b.yaml

The label audit (a rendered sample with the supervised spans marked, the supervised-token
fraction, dropped samples and why) is printed before training; it fails the run when nothing,
or no <|im_end|>, would be supervised. `mini-lm audit-data --config ...` prints it alone.
Any config key can be overridden on the command line: --max_steps 100 --packing true.
"""

from __future__ import annotations

import sys

from transformers import Trainer, set_seed

from mini_lm.callbacks import TrainingShape, add_recipe_callbacks
from mini_lm.config import SFT_ARGUMENTS, parse_config
from mini_lm.data.sft import build_sft_datasets, load_sft_conversations, prepare_sft_tokenizer
from mini_lm.data.sft_packing import PackedAttentionCheck, make_sft_collator
from mini_lm.errors import run_main
from mini_lm.lora import apply_lora
from mini_lm.model_card import CardFacts, write_model_card
from mini_lm.models import build_model
from mini_lm.training import configure_reporting, prepare_run_dir, run_dir_first, run_training, setup_logging
from mini_lm.validation import validate


def prepare_data(model_args, data_args, training_args):
    """(tokenizer, SFTData); rank 0 first, so a tokenizer trained on the data is shared by all ranks."""
    with training_args.main_process_first(desc="SFT data"):
        chats = load_sft_conversations(data_args, seed=training_args.seed)
    with run_dir_first(training_args, desc="tokenizer"):  # written into output_dir
        tokenizer = prepare_sft_tokenizer(model_args, data_args, training_args.output_dir, chats)
    with training_args.main_process_first(desc="SFT data"):
        data = build_sft_datasets(chats, tokenizer, data_args)
    if training_args.should_log:
        print(data.audit.render(), flush=True)
    data.audit.check()
    return tokenizer, data


def main(argv: list[str] | None = None) -> dict[str, float]:
    model_args, data_args, lora_args, training_args, probe_args = validate(parse_config(SFT_ARGUMENTS, argv))
    setup_logging(training_args)
    prepare_run_dir(training_args)  # resume / refuse a used dir / move the old run aside
    configure_reporting(training_args)
    set_seed(training_args.seed)

    tokenizer, data = prepare_data(model_args, data_args, training_args)
    model = apply_lora(build_model(model_args, tokenizer, packed_rows=data_args.packing), lora_args)
    collator = make_sft_collator(model, tokenizer, data_args.packing)
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=data.train,
        eval_dataset=data.eval,
        data_collator=collator,
        processing_class=tokenizer,
        callbacks=[PackedAttentionCheck(collator)] if data_args.packing else None,
    )
    # tokens/s, MFU, perplexity, run card; probes answer fixed questions at every checkpoint
    add_recipe_callbacks(trainer, probe_args, TrainingShape(seq_len=data_args.max_length))
    metrics = run_training(trainer)
    write_model_card(trainer, CardFacts.of("sft", model_args, data.audit.chat.files, data.train), metrics)
    return metrics


if __name__ == "__main__":
    sys.exit(run_main(main))  # a user error: one `error:` line, exit 2
