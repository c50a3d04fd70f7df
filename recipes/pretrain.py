"""Pretrain a GPT-2 / Qwen2 causal LM on a text corpus with the HF Trainer.

    # one CPU or GPU
    python recipes/pretrain.py --config recipes/configs/qwen2/pretrain_tiny.yaml
    # several GPUs (DDP), one node
    accelerate launch --config_file launch/accelerate_multi_gpu.yaml recipes/pretrain.py \
        --config recipes/configs/gpt2/pretrain_chinese_mini_82m.yaml
    # DeepSpeed ZeRO-2 (accelerate or torchrun + --deepspeed)
    accelerate launch --config_file launch/accelerate_zero2.yaml recipes/pretrain.py --config ...
    torchrun --nproc_per_node 8 recipes/pretrain.py --config ... --deepspeed ds_configs/zero2.json

Any config key can be overridden on the command line: --max_steps 100 --learning_rate 1e-3.
"""

from __future__ import annotations

import sys

from transformers import Trainer, set_seed

from mini_lm.callbacks import TrainingShape, add_recipe_callbacks
from mini_lm.config import PRETRAIN_ARGUMENTS, parse_config
from mini_lm.data.packing import CausalLMCollator, pad_id
from mini_lm.data.pretrain import build_pretrain_datasets, corpus_texts
from mini_lm.errors import run_main
from mini_lm.model_card import CardFacts, write_model_card
from mini_lm.models import build_model
from mini_lm.tokenization import prepare_tokenizer
from mini_lm.training import configure_reporting, prepare_run_dir, run_dir_first, run_training, setup_logging
from mini_lm.validation import validate


def main(argv: list[str] | None = None) -> dict[str, float]:
    model_args, data_args, training_args, probe_args = validate(parse_config(PRETRAIN_ARGUMENTS, argv))
    setup_logging(training_args)
    prepare_run_dir(training_args)  # resume / refuse a used dir / move the old run aside
    configure_reporting(training_args)
    set_seed(training_args.seed)

    # Rank 0 trains the tokenizer / fills the datasets cache first; the others then reuse it.
    with run_dir_first(training_args, desc="tokenizer"):
        tokenizer = prepare_tokenizer(
            model_args, training_args.output_dir, data_args.tokenizer_vocab_size, corpus_texts(data_args)
        )
    with training_args.main_process_first(desc="tokenize and pack"):
        train_dataset, eval_dataset = build_pretrain_datasets(data_args, tokenizer, seed=training_args.seed)

    model = build_model(model_args, tokenizer)
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=CausalLMCollator(pad_token_id=pad_id(tokenizer)),
        processing_class=tokenizer,
    )
    # tokens/s, MFU, perplexity, run card; probes answer fixed questions at every checkpoint
    add_recipe_callbacks(trainer, probe_args, TrainingShape(seq_len=data_args.block_size))
    metrics = run_training(trainer)
    write_model_card(
        trainer, CardFacts.of("pretraining", model_args, data_args.train_files, train_dataset), metrics
    )
    return metrics


if __name__ == "__main__":
    sys.exit(run_main(main))  # a user error: one `error:` line, exit 2
