import pytest
from transformers import GPT2Config, GPT2LMHeadModel, Qwen2Config, Qwen2ForCausalLM

from mini_lm.throughput import (
    ThroughputMeter,
    flops_per_token,
    matmul_parameters,
    mfu,
    model_flops_per_token,
    peak_tflops_for,
)


def test_flops_formula():
    assert flops_per_token(100, 2, 8, 16) == 6 * 100 + 12 * 2 * 8 * 16


def test_matmul_parameters_count_the_lm_head_once():
    cfg = dict(
        vocab_size=100,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
    )
    tied = Qwen2ForCausalLM(Qwen2Config(tie_word_embeddings=True, **cfg))
    untied = Qwen2ForCausalLM(Qwen2Config(tie_word_embeddings=False, **cfg))
    blocks = sum(p.numel() for n, p in tied.named_parameters() if "embed_tokens" not in n)
    assert matmul_parameters(tied) == blocks + 100 * 16  # tied head: embedding table counted as a matmul
    assert matmul_parameters(untied) == matmul_parameters(tied)
    # GPT-2: learned positions are a lookup, not a matmul
    gpt = GPT2LMHeadModel(GPT2Config(vocab_size=100, n_embd=16, n_layer=2, n_head=2, n_positions=32))
    expected = sum(
        p.numel()
        for n, p in gpt.named_parameters()
        if not n.startswith(("transformer.wte", "transformer.wpe"))
    )
    assert matmul_parameters(gpt) == expected + 100 * 16
    assert model_flops_per_token(gpt, 32) == 6 * matmul_parameters(gpt) + 12 * 2 * 16 * 32


@pytest.mark.parametrize(
    "name, peak",
    [
        ("NVIDIA H100 80GB HBM3", 989.0),
        ("NVIDIA H100 PCIe", 756.0),
        ("NVIDIA H200", 989.0),
        ("NVIDIA H20", 148.0),
        ("NVIDIA A100-SXM4-80GB", 312.0),
        ("NVIDIA A10G", 70.0),
        ("NVIDIA A10", 125.0),
        ("NVIDIA L40S", 362.0),
        ("NVIDIA L4", 121.0),
        ("NVIDIA GeForce RTX 4090", 165.0),
        ("Some CPU", None),
    ],
)
def test_peak_lookup(name, peak):
    assert peak_tflops_for(name) == peak


def test_mfu_arithmetic():
    # 1e5 tok/s at 3e9 FLOP/token = 3e14 FLOP/s on one 989 TFLOP/s device -> 30.3 %
    assert mfu(1e5, 3e9, 989.0) == pytest.approx(0.30334, rel=1e-4)
    # two devices each doing half the tokens give the same utilisation
    assert mfu(2e5, 3e9, 989.0, n_devices=2) == pytest.approx(mfu(1e5, 3e9, 989.0))


def test_meter_measures_intervals():
    meter = ThroughputMeter(flops_per_token_=1e9, peak_tflops=100.0, n_devices=2)
    meter.start(tokens_seen=0, now=10.0)
    out = meter.update(tokens_seen=40_000, now=12.0)
    assert out["tokens_per_second"] == 20_000 and out["tokens_per_second_per_device"] == 10_000
    assert out["mfu"] == pytest.approx(20_000 * 1e9 / (100e12 * 2))
    assert meter.update(tokens_seen=40_000, now=13.0) == {}  # no new tokens: nothing to report
    no_peak = ThroughputMeter(1e9, None, 1)
    no_peak.start(0, now=0.0)
    assert "mfu" not in no_peak.update(100, now=1.0)
