"""The GPU kit's report: one line per check, the issue's targets, gpu_check.json + gpu_check.md."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from .checks import PLAN

TARGETS = {"mfu": 0.45, "over_naive": 1.5, "packed_over_padded": 2.0}


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _num(value, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def line_environment(r: dict) -> str:
    a, v = r["attention"], r["versions"]
    return (
        f"{r['gpu']} ({r['memory_gib']} GiB), torch {r['torch']} CUDA {r['cuda']}, transformers "
        f"{v['transformers']}, deepspeed {v['deepspeed']}; flash_attn {'yes' if a['flash_attn_importable'] else 'no'}, "
        f"flex_attention {'yes' if a['flex_attention'] else 'no'}; auto: {a['auto_dense_rows']} (dense rows), "
        f"{a['auto_packed_rows']} (packed rows); bf16 matmul {_num(r.get('bf16_matmul_tflops'), '.0f')} TFLOP/s"
    )


def line_attention(r: dict) -> str:
    parts = [
        f"{impl}: diff {_num(c.get('max_abs_diff'), '.3g')}, unmasked {_num(c.get('unmasked_max_abs_diff'), '.3g')}"
        + (f", {c['fwd_bwd_ms']} ms fwd+bwd" if "fwd_bwd_ms" in c else "")
        + ("" if c["ok"] else f" FAILED {c.get('error', '')}".rstrip())
        for impl, c in r["impls"].items()
    ]
    eager = f"; eager {r['eager_fwd_bwd_ms']} ms fwd+bwd" if "eager_fwd_bwd_ms" in r else ""
    return f"tolerance {r['tolerance']:.3g} vs eager per document ({r['dtype']}): " + "; ".join(parts) + eager


def _line_run(name: str, r: dict) -> str:
    if not r.get("ok") and "error" in r:
        return f"{name}: FAILED {r['error']}"
    return (
        f"{name}: {_num(r['tokens_per_second'], ',.0f')} tok/s, MFU {_num(r['mfu'], '.1%')}, "
        f"peak {_num(r.get('peak_memory_gib'), '.1f')} GiB, loss {_num(r['first_loss'], '.2f')} -> "
        f"{_num(r['last_loss'], '.2f')} ({r['attn_implementation']}, {r['precision']})"
    )


def line_pretrain(r: dict) -> str:
    return "; ".join(_line_run(f"lm_loss {name}", v) for name, v in r["variants"].items())


def line_pretrain_naive(r: dict) -> str:
    return "; ".join(
        f"{row['variant']} ({row['attention']}): {_num(row['tokens_per_second'], ',.0f')} tok/s = "
        f"{_num(row['vs_naive'], '.2f')}x naive, MFU {_num(row['mfu'], '.1%')}, {_num(row['peak_memory_gib'], '.1f')} GiB"
        for row in r["rows"]
    )


def line_sft_packing(r: dict) -> str:
    parts = []
    for attn, run in r["runs"].items():
        if "error" in run:
            parts.append(f"{attn}: FAILED {run['error']}")
            continue
        res = run["results"]
        parts.append(
            f"{attn} -> {run['attn_implementation']}: packed {res['packed']['real_tokens_per_second']:,.0f} / "
            f"padded {res['padded']['real_tokens_per_second']:,.0f} real tok/s = {run['packed_over_padded']:.2f}x"
        )
    return "; ".join(parts)


def line_zero2(r: dict) -> str:
    return (
        f"ZeRO stage {r['deepspeed_zero_stage']} ({r['distributed_type']}), {r['steps']} steps; "
        + _line_run("", r)[2:]
    )


def line_generation(r: dict) -> str:
    batches = "; ".join(f"batch {b['batch']}: {b['tokens_per_second']:,.0f} tok/s" for b in r["by_batch"])
    ratio = r["ratios"].get("batch8_over_batch1", {}).get("value")
    return f"{batches} ({_num(ratio, '.1f')}x); KV cache {r['kv_cache']['speedup']:.1f}x faster than none"


FORMATTERS = {
    "environment": line_environment,
    "attention": line_attention,
    "pretrain": line_pretrain,
    "pretrain_naive": line_pretrain_naive,
    "sft_packing": line_sft_packing,
    "zero2": line_zero2,
    "generation": line_generation,
    "liger": lambda r: _line_run("use_liger_kernel", r),
}


def targets(report: dict) -> list[dict]:
    """The issue's three targets, read off the results (None: not measured)."""
    checks = {name: c.get("result") or {} for name, c in report["checks"].items()}
    variants = checks.get("pretrain", {}).get("variants", {})
    mfus = [v["mfu"] for v in variants.values() if v.get("ok") and v.get("mfu") is not None]
    rows = checks.get("pretrain_naive", {}).get("rows", [])
    over_naive = next((r["vs_naive"] for r in rows if r.get("variant") == "mini_lm"), None)
    packed = checks.get("sft_packing", {}).get("runs", {}).get("auto", {}).get("packed_over_padded")
    values = [
        (
            "MFU, Qwen2.5-0.5B @ 2048 bf16 (recipes/pretrain.py, best lm_loss)",
            "mfu",
            max(mfus) if mfus else None,
        ),
        ("tokens/s over the naive baseline (bench/train_throughput.py, same run)", "over_naive", over_naive),
        ("packed over padded real tokens/s, SFT (bench/sft_packing.py, auto)", "packed_over_padded", packed),
    ]
    return [
        {
            "target": what,
            "minimum": TARGETS[key],
            "value": value,
            "met": None if value is None else value >= TARGETS[key],
        }
        for what, key, value in values
    ]


def render_markdown(report: dict) -> str:
    env = (report["checks"].get("environment") or {}).get("result") or {}
    install = report.get("install", {})
    lines = [
        "# GPU check (bench/gpu_check.py)",
        "",
        f"{env.get('gpu', 'GPU unknown')}, torch {env.get('torch', '?')}; started {report['started']}, "
        f"budget {report['budget_s']} s; install: {install.get('status', 'not run')}"
        + (
            f" ({install['seconds']} s, {len(install['installed'])} packages)"
            if install.get("status") == "ok"
            else ""
        )
        + (f": {install['error']}" if install.get("error") else ""),
        "",
        "| check | status | seconds (limit) | result |",
        "|---|---|---:|---|",
    ]
    for check in PLAN:
        c = report["checks"].get(check.name)
        if c is None:
            continue
        text = c.get("error") or ""
        if c["status"] == "ok":
            try:
                text = FORMATTERS[check.name](c["result"])
            except (KeyError, TypeError, ValueError) as err:  # never lose the table over one result
                text = f"(result not formatted: {type(err).__name__} {err})"
        cell = text.replace("|", "/").replace("\n", " ")
        lines.append(
            f"| {check.name} | {c['status']} | {c.get('seconds', '-')} ({c.get('limit_s', '-')}) | {cell} |"
        )
    lines += ["", "| target | minimum | value | met |", "|---|---:|---:|---|"]
    for t in targets(report):
        fmt = ".1%" if t["minimum"] < 1 else ".2f"
        met = "not measured" if t["met"] is None else ("yes" if t["met"] else "NO")
        lines.append(f"| {t['target']} | {format(t['minimum'], fmt)} | {_num(t['value'], fmt)} | {met} |")
    return "\n".join(lines) + "\n"


def write_outputs(report: dict, out: Path) -> None:
    report["targets"] = targets(report)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    (out / "gpu_check.md").write_text(render_markdown(report), encoding="utf-8")
