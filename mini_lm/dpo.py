"""Preference training through TRL's ``DPOTrainer``, on pairs tokenized by ``mini_lm.data.preference``.

    trainer = build_dpo_trainer(model_args, lora_args, training_args, model, tokenizer, data)
    add_recipe_callbacks(trainer, probe_args, preference_shape(training_args))
    run_training(trainer)

The loss, the reference log-probabilities, the rewards / margins / accuracies it logs, DeepSpeed and
PEFT handling are TRL's. mini_lm hands it ``prompt_ids`` / ``chosen_ids`` / ``rejected_ids`` already
rendered and cut by the SFT rules (with the audit that says what was cut), so TRL's own tokenization
and its silent truncation do not run (``PreferenceTrainer``).

The reference model: with LoRA, TRL disables the adapter (no second copy of the weights); with
``precompute_ref_log_probs``, TRL scores the pairs once with the initial policy before training;
otherwise a second copy built exactly like the policy (``build_model``: same path, dtype, attention,
embedding size).
"""

from __future__ import annotations

import logging

from trl import DPOTrainer

from .config import LoraArguments, MiniLMDPOConfig, ModelArguments
from .lora import log_trainable, lora_config
from .models import build_model

logger = logging.getLogger(__name__)

PAIR_COLUMNS = ("prompt_ids", "chosen_ids", "rejected_ids")


class PreferenceTrainer(DPOTrainer):
    """``DPOTrainer`` that takes already tokenized pairs as they are.

    TRL 1.16 re-tokenizes any dataset it is given (``_prepare_dataset``: it would look for text
    columns and fail on ids), so datasets holding exactly the columns its collator reads pass
    through; anything else goes to TRL's preparation unchanged.
    """

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        if set(PAIR_COLUMNS) <= set(dataset.column_names or ()):
            return dataset
        return super()._prepare_dataset(dataset, processing_class, args, dataset_name)


def reference_model(model_args: ModelArguments, tokenizer, lora_args: LoraArguments, args: MiniLMDPOConfig):
    """A frozen copy of the starting model, or None where TRL needs none (LoRA, precomputed)."""
    if lora_args.use_peft or args.precompute_ref_log_probs:
        return None
    return build_model(model_args, tokenizer)


def build_dpo_trainer(
    model_args: ModelArguments,
    lora_args: LoraArguments,
    args: MiniLMDPOConfig,
    model,
    tokenizer,
    train_dataset,
    eval_dataset=None,
    callbacks=None,
) -> PreferenceTrainer:
    """TRL's DPOTrainer on mini_lm's pairs; LoRA adapters (use_peft) are added by TRL itself, which
    is what makes it score the reference with the adapter disabled."""
    trainer = PreferenceTrainer(
        model=model,
        ref_model=reference_model(model_args, tokenizer, lora_args, args),
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        peft_config=lora_config(lora_args),
        callbacks=callbacks,
    )
    if lora_args.use_peft:
        log_trainable(trainer.model, lora_args)
    reference = (
        "the policy with its LoRA adapter disabled"
        if trainer.ref_model is None and lora_args.use_peft
        else "precomputed log-probabilities of the starting model"
        if trainer.ref_model is None
        else "a frozen copy of the starting model"
    )
    logger.info("DPO: loss %s, beta %s; reference: %s", args.loss_type, args.beta, reference)
    return trainer
