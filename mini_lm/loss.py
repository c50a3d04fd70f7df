"""Causal-LM loss without the full-vocabulary logits: chunked linear + cross-entropy, on any device.

    model = build_model(ModelArguments(lm_loss="chunked"), tokenizer)   # or:
    enable_chunked_loss(model, chunk_size=4096)
    model(input_ids=ids, labels=ids).loss                              # same loss and gradients

The stock loss computes logits (tokens x vocab) in the model dtype, upcasts them to fp32 and keeps
both for the backward pass: at 151,680 vocabulary rows, batch 8 x 2048 tokens that is ~15 GB before
their gradient. Here the LM head and the cross-entropy run one chunk of tokens at a time, and each
chunk's gradient (w.r.t. the hidden states and the head weight) is computed in the forward pass, as
Liger's fused linear cross entropy does on GPU: only a (chunk x vocab) fp32 block ever exists, and
the matmul count stays that of the plain loss (no recomputation in backward).

The hook replaces the model *instance's* forward, in training mode and when labels are given, so
it holds under any trainer (HF Trainer, TRL), DDP, DeepSpeed and peft: they all call the model.
In eval mode, or without labels, the model's own forward runs (generation and eval see logits).
In training the output carries ``logits=None``, as Liger's forward does.
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
import logging

import torch
from transformers.modeling_outputs import CausalLMOutputWithPast

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100
LM_LOSSES = ("full", "chunked")


class _LinearCrossEntropy(torch.autograd.Function):
    """sum over tokens of cross_entropy(hidden @ weight.T, targets), chunk by chunk (see module doc)."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk_size: int, compute_dtype: torch.dtype):
        # hidden (N, d), weight (V, d), targets (N,) with IGNORE_INDEX where no token is predicted
        need_hidden, need_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_hidden = torch.empty_like(hidden) if need_hidden else None
        grad_weight = (
            torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_weight else None
        )
        w = weight.to(compute_dtype)
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for start in range(0, hidden.shape[0], chunk_size):
            h = hidden[start : start + chunk_size].to(compute_dtype)  # (c, d)
            t = targets[start : start + chunk_size]
            valid = t != IGNORE_INDEX
            safe_t = torch.where(valid, t, 0)
            logits = (h @ w.T).float()  # (c, V): the only vocabulary-wide tensor, one chunk at a time
            lse = torch.logsumexp(logits, dim=-1)
            picked = logits.gather(1, safe_t[:, None]).squeeze(1)
            total += torch.where(valid, lse - picked, 0.0).sum()
            if need_hidden or need_weight:
                probs = logits.sub_(lse[:, None]).exp_()  # softmax, in place: d loss / d logits
                probs[torch.arange(len(t), device=t.device), safe_t] -= 1.0
                grad_logits = probs.mul_(valid[:, None]).to(
                    compute_dtype
                )  # in place: one fp32 block per chunk
                if need_hidden:
                    grad_hidden[start : start + chunk_size] = grad_logits @ w
                if need_weight:
                    grad_weight += (grad_logits.T @ h).float()
        ctx.weight_dtype = weight.dtype
        ctx.save_for_backward(grad_hidden if need_hidden else None, grad_weight if need_weight else None)
        return total

    @staticmethod
    def backward(ctx, grad_total):
        grad_hidden, grad_weight = ctx.saved_tensors
        if grad_hidden is not None:
            grad_hidden = grad_hidden * grad_total.to(grad_hidden.dtype)
        if grad_weight is not None:
            grad_weight = (grad_weight * grad_total).to(ctx.weight_dtype)
        return grad_hidden, grad_weight, None, None, None


def _compute_dtype(hidden: torch.Tensor) -> torch.dtype:
    """The dtype the LM-head matmul would run in: the autocast dtype when autocast is on."""
    device = hidden.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return hidden.dtype


def chunked_causal_lm_loss(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor | None = None,
    num_items_in_batch: torch.Tensor | int | None = None,
    shift_labels: torch.Tensor | None = None,
    chunk_size: int = 4096,
) -> torch.Tensor:
    """transformers' ForCausalLMLoss(hidden @ weight.T, labels), without the (B, T, V) logits.

    hidden (B, T, d), labels (B, T): position t predicts labels[t + 1] (or shift_labels[t] if given);
    -100 is ignored. Sum over tokens / num_items_in_batch when given (the Trainer's count across
    gradient accumulation), else the mean over predicted tokens.
    """
    if shift_labels is None:
        shift_labels = torch.nn.functional.pad(labels, (0, 1), value=IGNORE_INDEX)[..., 1:]
    targets = shift_labels.reshape(-1).to(hidden.device)
    flat = hidden.reshape(-1, hidden.shape[-1])
    total = _LinearCrossEntropy.apply(flat, weight, targets, chunk_size, _compute_dtype(hidden))
    if num_items_in_batch is None:
        return total / (targets != IGNORE_INDEX).sum()
    if torch.is_tensor(num_items_in_batch):
        num_items_in_batch = num_items_in_batch.to(total.device)
    return total / num_items_in_batch


def enable_chunked_loss(model, chunk_size: int = 4096) -> None:
    """Make ``model`` (a transformers causal LM) compute its training loss with chunked_causal_lm_loss."""
    head = model.get_output_embeddings()
    decoder = getattr(model, model.base_model_prefix, None)
    if head is None or decoder is None or decoder is model or getattr(head, "bias", None) is not None:
        raise ValueError(
            f"lm_loss=chunked needs a causal LM with a bias-free LM head over a base model; "
            f"{type(model).__name__} is not one (use lm_loss: full)"
        )
    if chunk_size < 1:
        raise ValueError(f"lm_loss_chunk_size must be >= 1, got {chunk_size}")
    original = model.forward
    signature = inspect.signature(original)
    var_keyword = next(
        (p.name for p in signature.parameters.values() if p.kind is inspect.Parameter.VAR_KEYWORD), None
    )

    @functools.wraps(original)  # same signature: the Trainer keeps the same dataset columns
    def forward(*args, **kwargs):
        inputs = signature.bind_partial(*args, **kwargs).arguments  # positional args by name
        inputs.update(inputs.pop(var_keyword, {}))
        labels = inputs.pop("labels", None)
        if labels is None or not model.training:
            return original(*args, **kwargs)
        num_items = inputs.pop("num_items_in_batch", None)
        shift_labels = inputs.pop("shift_labels", None)
        inputs.pop("logits_to_keep", None)
        outputs = decoder(**inputs)
        loss = chunked_causal_lm_loss(
            outputs.last_hidden_state, head.weight, labels, num_items, shift_labels, chunk_size
        )
        # no KV cache in the output: this path only trains (generation runs the model's own forward)
        return CausalLMOutputWithPast(
            loss=loss, logits=None, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )

    model.forward = forward
    logger.info("LM loss: chunked linear + cross-entropy, %d tokens per chunk (no full logits)", chunk_size)


def check_liger_kernel(use_liger_kernel: bool) -> str | None:
    """Why ``use_liger_kernel: true`` cannot work in this process, or None when it can (or is off)."""
    if not use_liger_kernel:
        return None
    if importlib.util.find_spec("liger_kernel") is None:
        return (
            "use_liger_kernel: true needs the liger-kernel package: pip install 'mini_lm[liger]' "
            "(a GPU extra: Liger's kernels are Triton kernels)"
        )
    if not torch.cuda.is_available():
        return (
            "use_liger_kernel: true needs a CUDA GPU (Liger's kernels are Triton GPU kernels); "
            "on this device use lm_loss: chunked for the memory saving, or use_liger_kernel: false"
        )
    return None
