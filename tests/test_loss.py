"""lm_loss: chunked (mini_lm/loss.py): the same loss and gradients as the model's own loss, without a
(tokens x vocab) logits tensor; through the plain HF Trainer too. Negative controls: a misaligned
shift must change loss and gradients, and the plain path must show the full logits the chunked one
avoids. use_liger_kernel fails at config time where it cannot run."""

import copy

import pytest
import torch
from datasets import Dataset
from torch.overrides import TorchFunctionMode
from transformers import Trainer, TrainingArguments

from mini_lm.config import ConfigError, MiniLMTrainingArguments, ModelArguments
from mini_lm.loss import chunked_causal_lm_loss, enable_chunked_loss
from mini_lm.models import ModelConfigError, build_model

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=64)


def model_pair(tokenizer, family: str, chunk_size: int = 7):
    """(plain, chunked) models with identical weights, in train mode, no dropout."""
    torch.manual_seed(0)
    plain = build_model(ModelArguments(model_family=family, dropout=0.0, **TINY), tokenizer).train()
    chunked = copy.deepcopy(plain)
    enable_chunked_loss(chunked, chunk_size)
    return plain, chunked


def batch(vocab: int, rows: int = 3, length: int = 11) -> dict:
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(3, vocab, (rows, length), generator=generator)
    labels = ids.clone()
    labels[0, :4] = -100  # a prompt
    labels[2, 8:] = -100  # padding
    return {"input_ids": ids, "labels": labels, "use_cache": False}


def loss_and_grads(model, inputs: dict) -> tuple[torch.Tensor, dict]:
    model.zero_grad()
    loss = model(**inputs).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("family", ["qwen2", "gpt2"])
@pytest.mark.parametrize("num_items", [None, 13])
def test_chunked_loss_and_gradients_equal_the_plain_loss(tiny_tokenizer, family, num_items):
    plain, chunked = model_pair(tiny_tokenizer, family)
    inputs = batch(len(tiny_tokenizer)) | (
        {"num_items_in_batch": torch.tensor(num_items)} if num_items else {}
    )
    loss_plain, grads_plain = loss_and_grads(plain, inputs)
    out = chunked(**inputs)
    assert out.logits is None  # training output: no full logits, as Liger's forward
    loss_chunked, grads_chunked = loss_and_grads(chunked, inputs)
    torch.testing.assert_close(loss_chunked, loss_plain, rtol=1e-6, atol=1e-6)
    assert len(grads_plain) > 10 and grads_plain.keys() == grads_chunked.keys()
    for name in grads_plain:
        torch.testing.assert_close(grads_chunked[name], grads_plain[name], rtol=1e-4, atol=1e-6, msg=name)

    # negative control: the same comparison catches a loss that forgets to shift the labels
    hidden = plain.base_model(input_ids=inputs["input_ids"]).last_hidden_state
    weight = plain.get_output_embeddings().weight
    right = chunked_causal_lm_loss(hidden, weight, inputs["labels"], num_items, chunk_size=7)
    unshifted = chunked_causal_lm_loss(hidden, weight, shift_labels=inputs["labels"], chunk_size=7)
    torch.testing.assert_close(right.detach(), loss_plain, rtol=1e-6, atol=1e-6)
    assert (unshifted - loss_plain).abs() > 1e-2
    plain.zero_grad()
    unshifted.backward()
    assert not torch.allclose(
        weight.grad, grads_plain[next(n for n in grads_plain if "embed" in n or "wte" in n)]
    )


def test_chunked_loss_follows_bf16_autocast(tiny_tokenizer):
    """Under autocast (how the Trainer runs bf16 with fp32 weights) the head matmul runs in bf16 like the
    model's own lm_head; the control is the fp32 loss, which the bf16 rounding moves further away."""
    plain, chunked = model_pair(tiny_tokenizer, "qwen2")
    inputs = batch(len(tiny_tokenizer))
    with torch.no_grad():
        fp32 = plain(**inputs).loss
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss_plain, loss_chunked = plain(**inputs).loss, chunked(**inputs).loss
    assert (loss_plain - fp32).abs() > 10 * (loss_chunked - loss_plain).abs()


def test_eval_mode_and_generation_keep_the_model_forward(tiny_tokenizer):
    plain, chunked = model_pair(tiny_tokenizer, "qwen2")
    inputs = batch(len(tiny_tokenizer))
    plain.eval()
    chunked.eval()
    with torch.no_grad():
        a, b = plain(**inputs), chunked(**inputs)
    assert b.logits is not None and torch.equal(a.logits, b.logits) and torch.equal(a.loss, b.loss)
    prompt = inputs["input_ids"][:1, :4]
    assert torch.equal(plain.generate(prompt, max_new_tokens=3), chunked.generate(prompt, max_new_tokens=3))


class LargestVocabTensor(TorchFunctionMode):
    """Records the largest tensor produced whose last dimension is the vocabulary."""

    def __init__(self, vocab: int):
        super().__init__()
        self.vocab, self.largest = vocab, 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, tuple) else (out,):
            if isinstance(t, torch.Tensor) and t.dim() >= 2 and t.shape[-1] == self.vocab:
                self.largest = max(self.largest, t.numel())
        return out


def test_chunked_loss_never_builds_the_full_logits(tiny_tokenizer):
    plain, chunked = model_pair(tiny_tokenizer, "qwen2", chunk_size=16)
    vocab = plain.config.vocab_size
    inputs = batch(len(tiny_tokenizer), rows=4, length=64)
    tokens = inputs["input_ids"].numel()
    sizes = {}
    for name, model in (("plain", plain), ("chunked", chunked)):
        with LargestVocabTensor(vocab) as seen:
            model(**inputs).loss.backward()
        sizes[name] = seen.largest
    assert sizes["plain"] >= tokens * vocab  # negative control: the stock loss holds (B, T, V) logits
    # one chunk of 16 tokens at a time; the largest is the head weight's transposed view (d x V), d=32
    assert sizes["chunked"] <= max(16, TINY["hidden_size"]) * vocab < tokens * vocab


def test_chunked_loss_through_the_hf_trainer(tiny_tokenizer, tmp_path):
    """Plain transformers.Trainer (no mini_lm trainer), gradient accumulation 2 (num_items_in_batch),
    an extra column the Trainer must drop by the forward's signature: same losses, same weights."""
    plain, chunked = model_pair(tiny_tokenizer, "qwen2")
    rows = batch(len(tiny_tokenizer), rows=8, length=12)
    data = Dataset.from_dict(
        {"input_ids": rows["input_ids"].tolist(), "labels": rows["labels"].tolist(), "text": ["x"] * 8}
    )
    histories = {}
    for name, model in (("plain", plain), ("chunked", chunked)):
        args = TrainingArguments(
            output_dir=str(tmp_path / name),
            per_device_train_batch_size=2,
            gradient_accumulation_steps=2,
            max_steps=2,
            learning_rate=1e-2,
            optim="sgd",  # Adam would turn 1e-9 gradient noise on untouched rows into lr-sized steps
            logging_steps=1,
            report_to="none",
            save_strategy="no",
            use_cpu=True,
            seed=0,
        )
        trainer = Trainer(model=model, args=args, train_dataset=data)
        trainer.train()
        histories[name] = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(histories["plain"]) == 2
    assert histories["chunked"] == pytest.approx(histories["plain"], rel=1e-5)
    for (name, a), b in zip(plain.named_parameters(), chunked.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6, msg=name)


def test_lm_loss_config(tiny_tokenizer, tiny_bert_tokenizer):
    model = build_model(ModelArguments(model_family="gpt2", lm_loss="chunked", **TINY), tiny_tokenizer)
    assert model.forward.__wrapped__ is not None  # the chunked forward, wrapping the model's own
    with pytest.raises(ModelConfigError, match="unknown lm_loss 'fused'"):
        build_model(ModelArguments(lm_loss="fused", **TINY), tiny_tokenizer)
    with pytest.raises(ModelConfigError, match="BERT adapter takes lm_loss: full"):
        build_model(ModelArguments(model_family="bert", lm_loss="chunked", **TINY), tiny_bert_tokenizer)


def test_use_liger_kernel_fails_at_config_time_where_it_cannot_run(tmp_path, monkeypatch):
    import mini_lm.loss as loss

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    monkeypatch.setattr(loss.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match=r"pip install 'mini_lm\[liger\]'"):
        MiniLMTrainingArguments(output_dir=str(tmp_path), use_liger_kernel=True)
    monkeypatch.setattr(loss.importlib.util, "find_spec", lambda name: object())
    with pytest.raises(ConfigError, match="needs a CUDA GPU"):
        MiniLMTrainingArguments(output_dir=str(tmp_path), use_liger_kernel=True)
    assert not MiniLMTrainingArguments(output_dir=str(tmp_path)).use_liger_kernel
