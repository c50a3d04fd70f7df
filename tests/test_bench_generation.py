"""bench/generation.py runs end to end (quick sizes) and writes its table's JSON; no timing is asserted."""

import json

from .conftest import REPO, run_module_main


def test_generation_benchmark_quick(shared_data, tmp_path, capsys):
    out = tmp_path / "generation.json"
    report = run_module_main(REPO / "bench/generation.py", ["--quick", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    assert [r["prompt_tokens"] for r in report["by_prompt_length"]] == [16, 32]
    assert [r["batch"] for r in report["by_batch"]] == [1, 2]
    assert all(r["tokens_per_second"] > 0 for r in report["by_batch"])
    cache = report["kv_cache"]
    assert cache["speedup"] == cache["cache_off_seconds"] / cache["cache_on_seconds"]
    assert set(report["ratios"]) == {"kv_cache_speedup_512"}  # batch 8 was not run
    printed = capsys.readouterr().out
    assert "decode ms/token" in printed and "tokens/s" in printed and f"wrote {out}" in printed
