"""bench/train_throughput.py: its CPU mode run for real (tiny, 3 steps), its GPU mode's shapes
built on the meta device (no GPU here), and the summary arithmetic. Speed itself is not asserted:
figures live in the benchmark's output, not in unit tests."""

import importlib.util
import json
import sys

import pytest
import torch

from .conftest import REPO


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("train_throughput", REPO / "bench/train_throughput.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_gpu_mode_refuses_without_cuda(bench):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(SystemExit, match="--mode gpu needs a CUDA GPU"):
        bench.main(["--mode", "gpu"])


def test_gpu_shapes_are_qwen25_05b_at_2048_and_gpt2_124m_at_1024(bench, shared_data):
    from mini_lm.models import build_model
    from mini_lm.tokenization import load_tokenizer

    expected = {"qwen2.5-0.5b": (2048, 494.0e6), "gpt2-124m": (1024, 124.4e6)}
    for shape in bench.gpu_shapes():
        tokenizer = load_tokenizer(shared_data / shape.tokenizer)
        with torch.device("meta"):  # shapes only: no memory, no init
            model = build_model(shape.model, tokenizer)
        seq_len, params = expected[shape.name]
        assert shape.seq_len == seq_len
        assert model.num_parameters() == pytest.approx(params, rel=0.002), shape.name


def test_summary_takes_medians_and_ratios_to_naive(bench):
    def run(variant, tps, padding):
        return {
            "shape": "s",
            "variant": variant,
            "packed": variant != "naive",
            "attention": "sdpa",
            "precision": "fp32",
            "status": "ok",
            "tokens_per_second": tps,
            "mfu": None,
            "peak_memory_gib": None,
            "padding_fraction": padding,
        }

    runs = [
        run("naive", 100, 0.4),
        run("mini_lm", 150, 0.0),
        run("naive", 120, 0.4),
        run("mini_lm", 240, 0.0),
        run("naive", 80, 0.4),
        run("mini_lm", 210, 0.0),
    ]
    rows = {r["variant"]: r for r in bench.summarize(runs, "tokens_per_second")}
    assert rows["naive"]["tokens_per_second"] == 100 and rows["mini_lm"]["tokens_per_second"] == 210
    assert rows["mini_lm"]["vs_naive"] == pytest.approx(2.1) and rows["naive"]["vs_naive"] == 1.0
    oom = {**run("mini_lm", None, None), "status": "out of memory"}
    rows = {r["variant"]: r for r in bench.summarize([run("naive", 100, 0.4), oom])}
    assert rows["mini_lm"]["status"] == "out of memory" and rows["mini_lm"]["vs_naive"] is None
    assert "out of memory" in bench.format_table(list(rows.values()))


@pytest.mark.slow
def test_cpu_mode_measures_both_paths_side_by_side(bench, shared_data, tmp_path, capsys):
    out = tmp_path / "bench.json"
    bench.main(
        [
            "--shapes",
            "qwen2-tiny",
            "--variants",
            "mini_lm,naive",
            "--steps",
            "2",
            "--warmup",
            "1",
            "--repeats",
            "1",
            "--batch-size",
            "2",
            "--data-dir",
            str(shared_data),
            "--out",
            str(out),
        ]
    )
    report = json.loads(out.read_text())
    rows = {r["variant"]: r for r in report["results"]}
    assert rows["mini_lm"]["attention"] == "sdpa" and rows["naive"]["attention"] == "eager"
    assert rows["mini_lm"]["padding_fraction"] < 0.01 < rows["naive"]["padding_fraction"]
    assert all(r["tokens_per_second"] > 0 and r["tokens_per_cpu_second"] > 0 for r in rows.values())
    assert rows["naive"]["vs_naive"] == 1.0 and report["environment"]["cpu_threads"] == 1
    assert report["data"]["qwen2-tiny"]["seq_len"] == 256 and report["environment"]["mode"] == "cpu"
    assert "| qwen2-tiny | mini_lm | sdpa | fp32 |" in capsys.readouterr().out
