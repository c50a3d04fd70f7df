import logging

import pytest
import torch
from transformers import AutoModelForCausalLM, GPT2LMHeadModel, Qwen2ForCausalLM

from mini_lm.config import ModelArguments
from mini_lm.models import (
    AttentionCapabilities,
    ModelConfigError,
    build_model,
    choose_attn_implementation,
    padded_vocab_size,
)

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=64)


@pytest.mark.parametrize("family, cls", [("gpt2", GPT2LMHeadModel), ("qwen2", Qwen2ForCausalLM)])
def test_build_both_families(tiny_tokenizer, family, cls):
    model = build_model(ModelArguments(model_family=family, **TINY), tiny_tokenizer)
    assert isinstance(model, cls)
    vocab = padded_vocab_size(tiny_tokenizer, 64)  # len(tokenizer) rounded up to a multiple of 64
    assert vocab % 64 == 0 and len(tiny_tokenizer) <= vocab < len(tiny_tokenizer) + 64
    assert model.config.vocab_size == model.get_input_embeddings().num_embeddings == vocab
    assert model.config._attn_implementation == "sdpa"  # CPU, no flash_attn
    assert model.generation_config.eos_token_id == [0, 2]  # <|endoftext|>, <|im_end|>
    ids = torch.tensor([[1, 5, 7, 9]])
    out = model(input_ids=ids, labels=ids)
    assert out.logits.shape == (1, 4, vocab) and torch.isfinite(out.loss)


def test_qwen2_gqa_and_sizes(tiny_tokenizer):
    args = ModelArguments(
        model_family="qwen2",
        num_key_value_heads=2,
        intermediate_size=48,
        vocab_pad_multiple=1,
        tie_word_embeddings=False,
        **TINY,
    )
    model = build_model(args, tiny_tokenizer)
    cfg = model.config
    assert (cfg.num_key_value_heads, cfg.intermediate_size, cfg.vocab_size) == (2, 48, len(tiny_tokenizer))
    assert model.model.layers[0].self_attn.k_proj.out_features == 2 * (32 // 4)
    assert model.lm_head.weight is not model.model.embed_tokens.weight
    assert model.num_parameters() > model.num_parameters(exclude_embeddings=True)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(model_family="llama"), "unknown model_family"),
        (dict(model_family="qwen2", num_attention_heads=3), "not divisible"),
        (dict(model_family="qwen2", num_key_value_heads=3), "multiple of num_key_value_heads"),
        (dict(model_family="gpt2", num_key_value_heads=2), "no grouped-query attention"),
        (dict(model_family="qwen2", attn_implementation="flash_attention_2"), "needs the flash_attn package"),
        (dict(model_family="qwen2", attn_implementation="fast"), "unknown attn_implementation"),
    ],
)
def test_bad_model_configs(tiny_tokenizer, kwargs, message):
    args = ModelArguments(**{**TINY, **kwargs})
    with pytest.raises(ModelConfigError, match=message):
        build_model(args, tiny_tokenizer)


def test_attention_choice_logged_once(caplog, monkeypatch):
    import mini_lm.models as models

    models._log_attention_once.cache_clear()
    with caplog.at_level(logging.INFO, logger="mini_lm.models"):
        for _ in range(3):
            assert choose_attn_implementation("auto") == "sdpa"
    assert sum("attention implementation" in r.message for r in caplog.records) == 1
    # with flash_attn importable and CUDA present, auto picks FlashAttention-2
    monkeypatch.setattr(models.importlib.util, "find_spec", lambda name: object())
    monkeypatch.setattr(models.torch.cuda, "is_available", lambda: True)
    assert choose_attn_implementation("auto") == "flash_attention_2"


@pytest.mark.parametrize(
    "flash_attn, cuda, flex, packed_rows, expected",
    [
        (True, True, True, False, "flash_attention_2"),  # FA2 first, for any batch shape
        (True, True, True, True, "flash_attention_2"),
        (True, True, False, True, "flash_attention_2"),
        (False, True, True, True, "flex_attention"),  # packed rows on CUDA: document mask, blocks skipped
        (False, True, True, False, "sdpa"),  # plain causal rows: SDPA's flash backend
        (False, True, False, True, "sdpa"),  # no flex_attention in this torch
        (True, False, True, True, "sdpa"),  # no CUDA: neither FA2 nor compiled flex
        (False, False, True, True, "sdpa"),
        (False, False, False, False, "sdpa"),
    ],
)
def test_auto_attention_choice_table(flash_attn, cuda, flex, packed_rows, expected):
    caps = AttentionCapabilities(flash_attn=flash_attn, cuda=cuda, flex_attention=flex)
    assert choose_attn_implementation("auto", packed_rows, caps) == expected
    assert choose_attn_implementation("sdpa", packed_rows, caps) == "sdpa"  # an explicit choice stays


def test_explicit_attention_the_process_cannot_run_fails():
    none = AttentionCapabilities(flash_attn=False, cuda=False, flex_attention=False)
    with pytest.raises(ModelConfigError, match="needs the flash_attn package and a CUDA GPU"):
        choose_attn_implementation("flash_attention_2", capabilities=none)
    with pytest.raises(ModelConfigError, match="flex_attention needs torch.nn.attention.flex_attention"):
        choose_attn_implementation("flex_attention", capabilities=none)
    flex = AttentionCapabilities(flash_attn=False, cuda=False, flex_attention=True)
    assert choose_attn_implementation("flex_attention", capabilities=flex) == "flex_attention"


def test_packed_rows_reach_the_choice(tiny_tokenizer, monkeypatch):
    import mini_lm.models as models

    seen = []
    monkeypatch.setattr(
        models, "attention_capabilities", lambda: seen.append(1) or AttentionCapabilities(False, True, True)
    )
    args = ModelArguments(model_family="qwen2", **TINY)
    assert models.build_model(args, tiny_tokenizer, packed_rows=True).config._attn_implementation == (
        "flex_attention"
    )
    assert models.build_model(args, tiny_tokenizer).config._attn_implementation == "sdpa" and len(seen) == 2


def test_sdpa_and_eager_agree(tiny_tokenizer):
    torch.manual_seed(0)
    sdpa = build_model(
        ModelArguments(model_family="qwen2", attn_implementation="sdpa", **TINY), tiny_tokenizer
    )
    eager = build_model(
        ModelArguments(model_family="qwen2", attn_implementation="eager", **TINY), tiny_tokenizer
    )
    eager.load_state_dict(sdpa.state_dict())
    ids = torch.randint(3, len(tiny_tokenizer), (2, 16))
    assert torch.allclose(sdpa(ids, labels=ids).loss, eager(ids, labels=ids).loss, atol=1e-5)


def test_load_pretrained_path(tiny_tokenizer, tmp_path):
    model = build_model(ModelArguments(model_family="gpt2", **TINY), tiny_tokenizer)
    model.save_pretrained(tmp_path)
    loaded = build_model(ModelArguments(model_name_or_path=str(tmp_path), hidden_size=999), tiny_tokenizer)
    assert loaded.config.n_embd == 32  # size fields ignored for a pretrained path
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b)
    assert isinstance(AutoModelForCausalLM.from_pretrained(tmp_path), GPT2LMHeadModel)
