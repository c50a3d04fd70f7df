"""Train the BERT masked-LM adapter to predict the next token (seed 001), with the HF Trainer.

    # CPU, ~1 minute: a tiny BERT on 红楼梦 with the bert-base-chinese vocabulary
    python recipes/mlm.py --config recipes/configs/bert/mlm_tiny.yaml
    # seed 001's run: bert-base-chinese shape, max_len 15, batch 64, lr 1e-5 (GPU)
    python recipes/mlm.py --config recipes/configs/bert/mlm_seed_lr1e-5.yaml
    # ... starting from local pretrained bert-base-chinese weights instead of random init
    python recipes/mlm.py --config recipes/configs/bert/mlm_seed_lr1e-5.yaml --model_name_or_path /path/to/bert

Every window [CLS] context [MASK] [SEP] trains the MLM head at [MASK] to name the next token
(see mini_lm/models/bert_adapter.py). The saved dir generates like any causal LM:

    mini-lm generate runs/bert_mlm_tiny --prompt 宝玉笑道 --greedy
"""

from __future__ import annotations

import sys

from transformers import set_seed

from mini_lm.callbacks import add_recipe_callbacks
from mini_lm.config import MLM_ARGUMENTS, ConfigError, check_mlm_config, parse_config, setup_logging
from mini_lm.data.next_token import NextTokenCollator, build_next_token_datasets
from mini_lm.models import build_model
from mini_lm.models.bert_adapter import bert_tokenizer
from mini_lm.training import MiniLMTrainer, configure_reporting, run_training


def main(argv: list[str] | None = None) -> dict[str, float]:
    model_args, data_args, mlm_args, training_args, probe_args = parse_config(MLM_ARGUMENTS, argv)
    check_mlm_config(model_args, data_args, mlm_args, training_args)
    setup_logging(training_args)
    configure_reporting(training_args)
    set_seed(training_args.seed)

    vocab = model_args.tokenizer_name_or_path or model_args.model_name_or_path
    if not vocab:
        raise ConfigError(
            "no vocabulary: set tokenizer_name_or_path to a dir holding a BERT vocab.txt "
            "(or model_name_or_path to a pretrained BERT dir)"
        )
    tokenizer = bert_tokenizer(vocab)
    with training_args.main_process_first(desc="tokenize and cut windows"):
        train_dataset, eval_dataset = build_next_token_datasets(
            data_args, mlm_args, tokenizer, seed=training_args.seed
        )

    model = build_model(model_args, tokenizer)
    model.bind_tokenizer(
        tokenizer, context_window=mlm_args.max_len - 3
    )  # generation uses the training window
    trainer = MiniLMTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=NextTokenCollator(tokenizer),
        processing_class=tokenizer,
        seq_len=mlm_args.max_len,
    )
    add_recipe_callbacks(trainer, probe_args)  # the same checkpoint probes as the causal LMs
    return run_training(trainer)


if __name__ == "__main__":
    main(sys.argv[1:])
