"""BERT masked-LM adapter: a ``BertForMaskedLM`` that predicts the next token and generates left to right.

The scheme (seed 001), one ``forward`` for training and generation alike::

    context x_1 .. x_t (its last ``context_window`` tokens)
        -> [CLS] x_1 .. x_t [MASK] [SEP]          bidirectional attention, as BERT was trained
        -> MLM head at [MASK] = logits of x_{t+1}  (B, 1, V)

Why this scheme rather than a causal mask on BERT (BERT used as a GPT):

- It is the task a pretrained BERT already solves, fill in a [MASK] from full attention over
  its context, so a local bert-base-chinese starts from a skill instead of from representations
  trained for another attention pattern; and it is the experiment of seed 001 that mini_lm
  reproduces (lr 1e-5 learns, 1e-3 collapses, errors pile up as outputs are fed back).
- The price is paid knowingly: one target per training window (a causal LM gets T), and no KV
  cache (every new token changes every position's representation, so generation re-encodes the
  whole window each step). Both are why the context window is short (seed: 12 tokens).

Position ids count back from [MASK] (always at ``context_window + 1``, [CLS] just before the
first context token): the token right before [MASK] has the same position whatever the context
length, so "what precedes me" is learnt once rather than once per length. Measured on a 64-wide
BERT after 1000 steps: the held-out loss it gains from its context (vs a shuffled context) was
0.15 nats this way, 0.02 with positions counted from [CLS]. A full window still has [CLS] at
position 0, as pretrained BERT expects. Rows must be left-padded; padding is invisible.

The model speaks HF generation: ``generate()`` with greedy / temperature / top-k / top-p /
repetition penalty / stop tokens / streamers works unchanged, and ``mini_lm.generation`` treats
it like any causal LM. It is registered as ``model_type: bert_next_token``, so
``AutoModelForCausalLM.from_pretrained(dir)`` returns it once ``mini_lm.models`` is imported;
its weights are plain ``BertForMaskedLM`` weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    BertConfig,
    BertForMaskedLM,
    GenerationMixin,
    PreTrainedTokenizerBase,
)
from transformers.generation.stopping_criteria import MaxLengthCriteria
from transformers.modeling_outputs import CausalLMOutput

from ..labels import IGNORE_INDEX

# Special tokens the adapter adds around every context: [CLS] context [MASK] [SEP].
SCHEME_TOKENS = 3


def context_window(max_len: int) -> int:
    """Context tokens in a BERT input of ``max_len`` tokens: [CLS] context [MASK] [SEP], so 15 -> 12."""
    return max_len - SCHEME_TOKENS


class BertNextTokenConfig(BertConfig):
    """``BertConfig`` plus the scheme's window and token ids."""

    model_type = "bert_next_token"

    def __init__(
        self,
        context_window: int | None = None,
        mask_token_id: int | None = None,
        cls_token_id: int | None = None,
        sep_token_id: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        # context tokens the model sees; None -> as many as the position table allows
        self.context_window = context_window
        self.mask_token_id = mask_token_id
        self.cls_token_id = cls_token_id
        self.sep_token_id = sep_token_id


class BertNextTokenLM(BertForMaskedLM, GenerationMixin):
    """``BertForMaskedLM`` whose forward takes a context and returns next-token logits."""

    config_class = BertNextTokenConfig
    accepts_loss_kwargs = True  # the Trainer passes num_items_in_batch (exact gradient accumulation)
    slides_window = True  # reads its last `window` tokens: no prompt or generation is too long

    @property
    def window(self) -> int:
        limit = self.config.max_position_embeddings - SCHEME_TOKENS
        return min(self.config.context_window or limit, limit)

    def bind_tokenizer(self, tokenizer: PreTrainedTokenizerBase, context_window: int | None = None) -> None:
        """Take the scheme's token ids from ``tokenizer``; never let generation emit the scheme tokens."""
        missing = [
            n for n in ("cls_token", "mask_token", "sep_token", "pad_token") if getattr(tokenizer, n) is None
        ]
        if missing:
            raise ValueError(
                f"the BERT adapter needs a tokenizer with {', '.join(missing)} (a WordPiece "
                "BERT vocab, see mini_lm.tokenization.bert_tokenizer)"
            )
        cfg = self.config
        cfg.mask_token_id, cfg.cls_token_id = tokenizer.mask_token_id, tokenizer.cls_token_id
        cfg.sep_token_id, cfg.pad_token_id = tokenizer.sep_token_id, tokenizer.pad_token_id
        if context_window is not None:
            limit = cfg.max_position_embeddings - SCHEME_TOKENS
            if not 1 <= context_window <= limit:
                raise ValueError(
                    f"context_window={context_window} must be in [1, {limit}] "
                    f"(max_position_embeddings={cfg.max_position_embeddings} minus [CLS] [MASK] [SEP])"
                )
            cfg.context_window = context_window
        # [UNK] included: it decodes to nothing, so a sampled [UNK] would be an invisible token.
        self.generation_config.suppress_tokens = sorted(
            {tokenizer.pad_token_id, tokenizer.cls_token_id, tokenizer.mask_token_id, tokenizer.unk_token_id}
            - {None}
        )

    def scheme_inputs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None):
        """(B, T) left-padded context -> (B, W' + 3) ``pads [CLS] context[-W:] [MASK] [SEP]``, mask, positions.

        Positions count back from [MASK], which is always at W + 1: ``[[7, 8, 9]]`` with W=4 ->
        ids ``[[CLS, 7, 8, 9, MASK, SEP]]``, positions ``[[1, 2, 3, 4, 5, 6]]``.
        """
        cfg = self.config
        if None in (cfg.mask_token_id, cfg.cls_token_id, cfg.sep_token_id):
            raise ValueError(
                "BertNextTokenLM has no [MASK]/[CLS]/[SEP] ids: call bind_tokenizer(tokenizer) first"
            )
        if input_ids.shape[1] == 0:
            raise ValueError("BertNextTokenLM needs at least one context token per row (got an empty prompt)")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        ids, mask = input_ids[:, -self.window :], attention_mask[:, -self.window :]  # (B, W')
        if not bool((mask[:, 1:] >= mask[:, :-1]).all() and mask[:, -1].all()):
            raise ValueError("BertNextTokenLM needs left-padded rows: the [MASK] goes after the last column")
        column = torch.ones_like(ids[:, :1])  # (B, 1)
        ids = torch.cat(
            [column * cfg.pad_token_id, ids, column * cfg.mask_token_id, column * cfg.sep_token_id], 1
        )
        mask = torch.cat([column * 0, mask, column, column], 1)  # (B, W' + 3)
        rows, first_real = torch.arange(len(ids), device=ids.device), (mask == 0).sum(1) - 1
        ids[rows, first_real], mask[rows, first_real] = cfg.cls_token_id, 1  # [CLS] right before each context
        offset = self.window - (ids.shape[1] - SCHEME_TOKENS)
        positions = torch.arange(ids.shape[1], device=ids.device).expand_as(ids) + offset
        return ids, mask, positions

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        num_items_in_batch: int | torch.Tensor | None = None,
        **kwargs,
    ) -> CausalLMOutput:
        """logits (B, 1, V) for the token after each row; ``labels`` (B,) -> mean cross-entropy."""
        ids, mask, positions = self.scheme_inputs(input_ids, attention_mask)
        hidden = self.bert(input_ids=ids, attention_mask=mask, position_ids=positions).last_hidden_state
        logits = self.cls(hidden[:, -2])[:, None, :]  # the MLM head at [MASK] only: (B, 1, V)
        loss = None
        if labels is not None:
            labels = labels.reshape(-1).to(logits.device)
            loss = F.cross_entropy(logits[:, 0].float(), labels, ignore_index=IGNORE_INDEX, reduction="sum")
            loss = loss / (
                num_items_in_batch if num_items_in_batch is not None else (labels != IGNORE_INDEX).sum()
            )
        return CausalLMOutput(loss=loss, logits=logits)

    def prepare_inputs_for_generation(self, input_ids, attention_mask=None, **kwargs):
        # No KV cache: the whole (left-padded) sequence is re-encoded at every step.
        return {"input_ids": input_ids, "attention_mask": attention_mask}

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False

    def _get_stopping_criteria(self, *args, **kwargs):
        # HF warns once a sequence outgrows max_position_embeddings; the window makes that harmless here.
        criteria = super()._get_stopping_criteria(*args, **kwargs)
        for criterion in criteria:
            if isinstance(criterion, MaxLengthCriteria):
                criterion.max_position_embeddings = None
        return criteria


AutoConfig.register(BertNextTokenConfig.model_type, BertNextTokenConfig)
AutoModelForCausalLM.register(BertNextTokenConfig, BertNextTokenLM)
