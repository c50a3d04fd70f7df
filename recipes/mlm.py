"""Train the BERT masked-LM adapter to predict the next token (seed 001), with the HF Trainer.

    # CPU, ~1 minute: a tiny BERT on 红楼梦 with the bert-base-chinese vocabulary
    python recipes/mlm.py --config recipes/configs/bert/mlm_tiny.yaml
    # seed 001's run: bert-base-chinese shape, max_len 15, batch 64, lr 1e-5 (GPU)
    python recipes/mlm.py --config recipes/configs/bert/mlm_seed.yaml
    # ... starting from local pretrained bert-base-chinese weights instead of random init
    python recipes/mlm.py --config recipes/configs/bert/mlm_seed.yaml --model_name_or_path /path/to/bert

Every window [CLS] context [MASK] [SEP] trains the MLM head at [MASK] to name the next token
(see mini_lm/models/bert_adapter.py). The saved dir generates like any causal LM:

    mini-lm generate runs/bert_mlm_tiny --prompt 宝玉笑道 --greedy
"""

from __future__ import annotations

import sys

from transformers import Trainer, set_seed

from mini_lm.callbacks import TrainingShape, add_recipe_callbacks
from mini_lm.config import MLM_ARGUMENTS, parse_config
from mini_lm.data.next_token import NextTokenCollator, build_next_token_datasets
from mini_lm.errors import run_main
from mini_lm.model_card import CardFacts, write_model_card
from mini_lm.models import build_model
from mini_lm.models.bert_adapter import context_window
from mini_lm.tokenization import prepare_tokenizer
from mini_lm.training import configure_reporting, prepare_run_dir, run_training, setup_logging
from mini_lm.validation import validate


def main(argv: list[str] | None = None) -> dict[str, float]:
    model_args, data_args, mlm_args, training_args, probe_args = validate(parse_config(MLM_ARGUMENTS, argv))
    setup_logging(training_args)
    prepare_run_dir(training_args)  # resume / refuse a used dir / move the old run aside
    configure_reporting(training_args)
    set_seed(training_args.seed)

    window = context_window(mlm_args.max_len)  # training and generation use the same window
    tokenizer = prepare_tokenizer(model_args, training_args.output_dir)  # the WordPiece vocabulary
    with training_args.main_process_first(desc="tokenize and cut windows"):
        train_dataset, eval_dataset = build_next_token_datasets(
            data_args, mlm_args, tokenizer, window, seed=training_args.seed
        )

    model = build_model(model_args, tokenizer, context_window=window)
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=NextTokenCollator(tokenizer),
        processing_class=tokenizer,
    )
    # the same instrumentation and checkpoint probes as the causal LMs
    add_recipe_callbacks(trainer, probe_args, TrainingShape(seq_len=mlm_args.max_len))
    metrics = run_training(trainer)
    write_model_card(
        trainer, CardFacts.of("bert-adapter", model_args, data_args.train_files, train_dataset), metrics
    )
    return metrics


if __name__ == "__main__":
    sys.exit(run_main(main))  # a user error: one `error:` line, exit 2
