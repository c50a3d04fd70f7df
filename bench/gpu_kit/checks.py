"""The GPU kit's checks: each runs in its own process (bench/gpu_check.py starts them) and returns a
JSON-able dict; a failure raises, after ``ctx.save`` kept what was measured. Heavy imports (torch,
transformers) stay inside the functions: importing this module costs nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1]
REPO = BENCH.parent
RECIPE_CONFIG = "recipes/configs/qwen2/pretrain_qwen2.5_0.5b.yaml"
DEFAULT_BUDGET_S = 450  # 7.5 minutes: with the machine's start, one device call of <= 500 s
INSTALL_BUDGET_S = 40


@dataclass(frozen=True)
class Check:
    name: str
    budget_s: int
    what: str
    optional: bool = False  # started only when its whole budget is still left


PLAN = [
    Check(
        "environment",
        25,
        "GPU, driver, torch/CUDA, package versions, attention backends, bf16 matmul TFLOP/s",
    ),
    Check(
        "attention",
        60,
        "packed rows vs each document alone on eager (bf16): sdpa, flex_attention, FA2; unmasked control",
    ),
    Check(
        "pretrain",
        95,
        "recipes/pretrain.py, Qwen2.5-0.5B shape @ 2048, bf16, 30 steps: lm_loss full and chunked",
    ),
    Check(
        "pretrain_naive",
        70,
        "bench/train_throughput.py: naive HF baseline vs mini_lm path, same shape and batch",
    ),
    Check(
        "sft_packing",
        65,
        "bench/sft_packing.py on sharegpt_zh_1k: packed vs padded real tokens/s (auto, sdpa)",
    ),
    Check("zero2", 55, "torchrun 1 GPU, recipes/pretrain.py --deepspeed ds_configs/zero2.json, 10 steps"),
    Check(
        "generation", 35, "bench/generation.py, 0.5B shape, bf16: tokens/s at batch 1 and 8, KV cache on/off"
    ),
    Check(
        "liger",
        45,
        "recipes/pretrain.py with use_liger_kernel: true (Liger's kernels and fused linear CE)",
        True,
    ),
]


@dataclass
class Context:
    """Where a check reads and writes."""

    data: Path  # the kit's data folder (.gpu_data, or the shared data folder itself)
    work: Path  # scratch: run dirs, datasets cache
    result: Path | None = None  # the check's JSON (rewritten as it goes)

    def save(self, partial: dict) -> None:
        if self.result is not None:
            self.result.write_text(json.dumps(partial, indent=2, default=str), encoding="utf-8")

    def tokenizer(self) -> str:
        return str(self.data / "tokenizers/qwen2.5")


class CheckFailed(RuntimeError):
    """A check ran but its result is wrong (e.g. attention leaks across documents)."""


def load_script(name: str):
    """bench/<name>.py or recipes/<name>.py as a module (neither folder is a package)."""
    import importlib.util

    path = next(p for p in (BENCH / f"{name}.py", REPO / "recipes" / f"{name}.py") if p.is_file())
    spec = importlib.util.spec_from_file_location(f"kit_{path.parent.name}_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------- the checks' command lines


def pretrain_argv(ctx: Context, run: str, steps: int = 30, extra: tuple[str, ...] = ()) -> list[str]:
    """recipes/pretrain.py with the 0.5B recipe's model, on the kit's data, sized for a short check:
    micro batch 8 x 2048 = 16,384 tokens per step, no accumulation, no eval, no checkpoints."""
    return [
        *("--config", str(REPO / RECIPE_CONFIG)),
        *("--tokenizer_name_or_path", ctx.tokenizer()),
        *("--train_files", str(ctx.data / "corpus/zh/hongloumeng.txt")),
        *("--output_dir", str(ctx.work / run), "--overwrite_output_dir", "true"),
        *("--deepspeed", "", "--per_device_train_batch_size", "8", "--gradient_accumulation_steps", "1"),
        *("--max_steps", str(steps), "--warmup_steps", "3", "--logging_steps", str(max(1, steps // 6))),
        *("--validation_split", "0", "--eval_strategy", "no", "--save_strategy", "no", "--probe", "false"),
        *("--report_to", "none", "--dataloader_num_workers", "2", "--num_proc", "8"),
        *extra,
    ]


PRETRAIN_VARIANTS = {"full": (), "chunked": ("--lm_loss", "chunked")}
LIGER_FLAGS = ("--use_liger_kernel", "true")
ZERO2_FLAGS = ("--deepspeed", str(REPO / "ds_configs/zero2.json"))


def naive_argv(ctx: Context) -> list[str]:
    return [
        *("--mode", "gpu", "--shapes", "qwen2.5-0.5b", "--variants", "naive,mini_lm", "--batch-size", "8"),
        *("--steps", "15", "--warmup", "3", "--repeats", "1", "--data-dir", str(ctx.data)),
        *("--out", str(ctx.work / "train_throughput.json")),
    ]


def sft_argv(ctx: Context, attn: str) -> list[str]:
    return [
        *("--device", "cuda", "--attn", attn, "--tokenizer", ctx.tokenizer()),
        *("--data", str(ctx.data / "sft/sharegpt_zh_1k.jsonl"), "--steps", "4", "--rounds", "2"),
        *("--out", str(ctx.work / f"sft_packing_{attn}.json")),
    ]


def generation_argv(ctx: Context) -> list[str]:
    return [
        *("--device", "cuda", "--dtype", "bfloat16", "--tokenizer", ctx.tokenizer()),
        *("--hidden", "896", "--layers", "24", "--heads", "14", "--kv-heads", "2", "--intermediate", "4864"),
        *("--corpus", str(ctx.data / "corpus/zh/hongloumeng.txt"), "--prompt-lengths", "64", "512"),
        *("--batch-sizes", "1", "8", "--new-tokens", "32", "--batch-new-tokens", "128"),
        *("--cache-new-tokens", "256", "--repeats", "2", "--out", str(ctx.work / "generation.json")),
    ]


# --------------------------------------------------------------------------- the checks (one process each)


def run_environment(ctx: Context) -> dict:
    import torch

    from mini_lm.models import attention_capabilities, choose_attn_implementation
    from mini_lm.throughput import device_peak_tflops

    props = torch.cuda.get_device_properties(0)
    caps = attention_capabilities()
    out = {
        "gpu": torch.cuda.get_device_name(),
        "capability": ".".join(map(str, torch.cuda.get_device_capability())),
        "memory_gib": round(props.total_memory / 2**30, 1),
        "multiprocessors": props.multi_processor_count,
        "driver": _nvidia_smi("driver_version"),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "bf16_supported": torch.cuda.is_bf16_supported(),
        "versions": _versions(),
        "attention": {
            "flash_attn_importable": caps.flash_attn,
            "flash_attn_note": None
            if caps.flash_attn
            else "not importable: PyPI has only an sdist (flash-attn 2.8.3.post2) whose CUDA build takes far "
            "longer than this budget; not attempted",
            "flex_attention": caps.flex_attention,
            "sdpa_backends": {
                "flash": torch.backends.cuda.flash_sdp_enabled(),
                "mem_efficient": torch.backends.cuda.mem_efficient_sdp_enabled(),
                "cudnn": torch.backends.cuda.cudnn_sdp_enabled(),
            },
            "auto_dense_rows": choose_attn_implementation("auto", packed_rows=False),
            "auto_packed_rows": choose_attn_implementation("auto", packed_rows=True),
        },
        "peak_tflops_table": device_peak_tflops(),
        "mini_lm_from": str(Path(sys.modules["mini_lm"].__file__).parent),
    }
    ctx.save(out)
    out["bf16_matmul_tflops"] = round(_matmul_tflops(), 1)
    return out


def _nvidia_smi(field: str) -> str | None:
    try:
        cmd = ["nvidia-smi", f"--query-gpu={field}", "--format=csv,noheader"]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=20).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _versions() -> dict[str, str | None]:
    import importlib.metadata

    names = ["transformers", "accelerate", "datasets", "deepspeed", "peft", "tokenizers", "triton"]
    names += ["liger-kernel", "flash-attn", "pyarrow", "huggingface-hub", "mini_lm"]
    out = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def _matmul_tflops(n: int = 8192, repeats: int = 10) -> float:
    """bf16 n x n x n matmul rate on random data: the ceiling MFU is read against (~790 seen on an H200)."""
    import torch

    a, b = (torch.randn(n, n, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        a @ b
    end.record()
    torch.cuda.synchronize()
    return 2 * n**3 * repeats / (start.elapsed_time(end) / 1e3) / 1e12


# model and documents of the attention check; "cpu" is what the tests run
ATTENTION_SIZES = {
    "cuda": dict(
        hidden=512, layers=4, heads=8, lengths=(700, 300, 1000, 48), rows=4, steps=5, tolerance=3e-2
    ),
    "cpu": dict(hidden=32, layers=2, heads=4, lengths=(9, 5, 12), rows=0, steps=0, tolerance=1e-4),
}


def run_attention(ctx: Context, device: str = "cuda") -> dict:
    """Packed rows (documents back to back, position_ids restarting) through each attention kernel
    must give the logits of each document run alone on eager; the same row without restarting
    positions (one long sequence) must not. Then forward+backward time on full packed rows."""
    import torch

    from mini_lm.models import attention_capabilities
    from mini_lm.tokenization import load_tokenizer

    sizes = ATTENTION_SIZES[device]
    tokenizer = load_tokenizer(ctx.tokenizer())
    generator = torch.Generator().manual_seed(0)
    docs = [torch.randint(3, len(tokenizer), (n,), generator=generator) for n in sizes["lengths"]]
    eager = _attention_model("eager", tokenizer, sizes, device)
    with torch.no_grad():
        reference = torch.cat(
            [eager(input_ids=d[None].to(device), use_cache=False).logits[0].float() for d in docs]
        )
    tolerance = sizes["tolerance"] * max(1.0, reference.abs().max().item())
    out = {
        "reference": "eager, each document alone",
        "documents": list(sizes["lengths"]),
        "tolerance": tolerance,
    }
    out["dtype"], out["impls"] = str(next(eager.parameters()).dtype), {}
    caps = attention_capabilities()
    impls = ["sdpa"] + ["flex_attention"] * (device == "cuda" and caps.flex_attention)
    impls += ["flash_attention_2"] * (device == "cuda" and caps.flash_attn and caps.cuda)
    for impl in impls:
        try:
            model = _attention_model(impl, tokenizer, sizes, device)
            out["impls"][impl] = _attention_case(model, tokenizer, docs, reference, tolerance, sizes)
        except Exception as err:  # one kernel failing must not hide the others
            out["impls"][impl] = {"ok": False, "error": f"{type(err).__name__}: {err}"}
        ctx.save(out)
    if sizes["rows"]:
        out["eager_fwd_bwd_ms"] = _fwd_bwd_ms(eager, tokenizer, sizes)
        out["sdpa_flash_backend"] = _sdpa_flash_backend(tokenizer, docs, reference, tolerance, sizes)
    failed = [impl for impl, r in out["impls"].items() if not r["ok"]]
    out["ok"] = not failed
    ctx.save(out)
    if failed:
        raise CheckFailed(f"packed-row attention wrong or failing for {', '.join(failed)}")
    return out


def _attention_model(impl: str, tokenizer, sizes: dict, device: str):
    import torch

    from mini_lm.config import ModelArguments
    from mini_lm.models import build_model

    torch.manual_seed(0)  # the same weights for every kernel
    args = ModelArguments(
        model_family="qwen2",
        hidden_size=sizes["hidden"],
        num_hidden_layers=sizes["layers"],
        num_attention_heads=sizes["heads"],
        num_key_value_heads=2,
        max_position_embeddings=4096,
        attn_implementation=impl,
    )
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    return build_model(args, tokenizer, packed_rows=True).to(device=device, dtype=dtype).eval()


def _attention_case(model, tokenizer, docs, reference, tolerance: float, sizes: dict) -> dict:
    import torch

    from mini_lm.data.sft_packing import make_sft_collator

    collator = make_sft_collator(model, tokenizer, packing=True)  # what recipes/sft.py would use
    ids = torch.cat(docs)
    row = {
        "input_ids": ids.tolist(),
        "labels": ids.tolist(),
        "position_ids": [p for d in docs for p in range(len(d))],
    }
    device = next(model.parameters()).device
    batch = {
        k: v.to(device) if torch.is_tensor(v) else v for k, v in collator([row]).items() if k != "labels"
    }
    with torch.no_grad():
        packed = model(**batch).logits[0, : len(ids)].float()
        # negative control: the same tokens as one sequence; attention then crosses the documents
        unmasked = model(input_ids=ids[None].to(device), use_cache=False).logits[0].float()
    diff, leak = (packed - reference).abs().max().item(), (unmasked - reference).abs().max().item()
    result = {"collator": type(collator).__name__, "max_abs_diff": diff, "unmasked_max_abs_diff": leak}
    result["ok"] = diff <= tolerance < leak
    if sizes["rows"]:
        result["fwd_bwd_ms"] = _fwd_bwd_ms(model, tokenizer, sizes, collator)
    return result


def _packed_rows(tokenizer, sizes: dict, width: int = 2048) -> list[dict]:
    """``sizes['rows']`` rows of random documents (100-900 tokens) filling ``width`` tokens each."""
    import random

    rng, rows = random.Random(0), []
    for _ in range(sizes["rows"]):
        ids, positions = [], []
        while len(ids) < width:
            n = min(rng.randrange(100, 900), width - len(ids))
            ids += [rng.randrange(3, len(tokenizer)) for _ in range(n)]
            positions += range(n)
        rows.append({"input_ids": ids, "labels": ids, "position_ids": positions})
    return rows


def _fwd_bwd_ms(model, tokenizer, sizes: dict, collator=None) -> float:
    """Median ms of forward + backward on full packed rows (after 2 untimed steps: compiles)."""
    import statistics

    import torch

    from mini_lm.data.sft_packing import PackedCollator

    collator = collator or PackedCollator(0)
    device = next(model.parameters()).device
    batch = {
        k: v.to(device) if torch.is_tensor(v) else v
        for k, v in collator(_packed_rows(tokenizer, sizes)).items()
    }
    model.train()
    times = []
    for _ in range(2 + sizes["steps"]):
        torch.cuda.synchronize()
        began = time.perf_counter()
        model(**batch).loss.backward()
        torch.cuda.synchronize()
        times.append(1000 * (time.perf_counter() - began))
        model.zero_grad(set_to_none=True)
    model.eval()
    return round(statistics.median(times[2:]), 2)


def _sdpa_flash_backend(tokenizer, docs, reference, tolerance: float, sizes: dict) -> dict:
    """SDPA restricted to its flash kernel, each document alone (plain causal: no mask needed)."""
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel

    model = _attention_model("sdpa", tokenizer, sizes, "cuda")
    try:
        with torch.no_grad(), sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
            logits = torch.cat(
                [model(input_ids=d[None].cuda(), use_cache=False).logits[0].float() for d in docs]
            )
    except RuntimeError as err:
        return {"ok": False, "error": str(err).splitlines()[0]}
    diff = (logits - reference).abs().max().item()
    return {"ok": diff <= tolerance, "max_abs_diff": diff}


def run_pretrain(ctx: Context) -> dict:
    """The recipe itself, twice: the model's own loss, and lm_loss: chunked (no full fp32 logits)."""
    out = {"config": RECIPE_CONFIG, "tokens_per_step": 8 * 2048, "variants": {}}
    for name, flags in PRETRAIN_VARIANTS.items():
        run = f"pretrain_{name}"
        try:
            out["variants"][name] = _recipe_run(ctx, run, pretrain_argv(ctx, run, extra=flags), steps=30)
        except Exception as err:  # the other variant still runs
            out["variants"][name] = {"ok": False, "error": f"{type(err).__name__}: {err}"}
        ctx.save(out)
    failed = [name for name, r in out["variants"].items() if not r["ok"]]
    if failed:
        raise CheckFailed(f"pretraining failed for lm_loss {', '.join(failed)}")
    return out


def run_liger(ctx: Context) -> dict:
    out = _recipe_run(
        ctx, "pretrain_liger", pretrain_argv(ctx, "pretrain_liger", extra=LIGER_FLAGS), steps=30
    )
    if not out["ok"]:
        raise CheckFailed("use_liger_kernel run did not train (see the result)")
    return out


def _recipe_run(ctx: Context, run: str, argv: list[str], steps: int) -> dict:
    """recipes/pretrain.py main() in this process: its logs, plus wall time and peak GPU memory."""
    import gc

    import torch

    recipe = sys.modules.get("kit_recipes_pretrain") or load_script("pretrain")
    torch.cuda.reset_peak_memory_stats()
    began = time.perf_counter()
    recipe.main(argv)
    seconds = time.perf_counter() - began
    peak = torch.cuda.max_memory_allocated() / 2**30
    gc.collect()
    torch.cuda.empty_cache()
    digest = digest_run(ctx.work / run, expected_steps=steps)
    return {**digest, "seconds": round(seconds, 1), "peak_memory_gib": round(peak, 2)}


def digest_run(run_dir: Path, expected_steps: int | None = None) -> dict:
    """A recipe run's trainer_state.json + run_info.json -> its figures. tokens/s and MFU are medians
    over the logging intervals after the first (which holds start-up and compilation)."""
    import math
    import statistics

    state = json.loads((run_dir / "trainer_state.json").read_text(encoding="utf-8"))
    info_path = run_dir / "run_info.json"
    info = json.loads(info_path.read_text(encoding="utf-8")) if info_path.is_file() else {}
    logs = [h for h in state["log_history"] if "loss" in h]
    timed = [h for h in logs if "tokens_per_second" in h][1:]
    losses = [h["loss"] for h in logs]
    finite = bool(losses) and all(math.isfinite(x) for x in losses)
    steps = state.get("global_step")
    out = {
        "steps": steps,
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        "losses_finite": finite,
        "tokens_per_second": statistics.median(h["tokens_per_second"] for h in timed) if timed else None,
        "mfu": statistics.median(h["mfu"] for h in timed if "mfu" in h)
        if any("mfu" in h for h in timed)
        else None,
    }
    for key in ("attn_implementation", "precision", "distributed_type", "deepspeed_zero_stage", "world_size"):
        out[key] = info.get(key)
    out["ok"] = finite and (expected_steps is None or steps == expected_steps)
    return out


def run_pretrain_naive(ctx: Context) -> dict:
    rows = load_script("train_throughput").main(naive_argv(ctx))
    return {"rows": rows}


def run_sft_packing(ctx: Context) -> dict:
    """bench/sft_packing.py with auto attention (flex_attention or FA2 for the packed rows) and SDPA."""
    bench, out = load_script("sft_packing"), {"runs": {}}
    for attn in ("auto", "sdpa"):
        try:
            out["runs"][attn] = bench.main(sft_argv(ctx, attn))
        except Exception as err:
            out["runs"][attn] = {"error": f"{type(err).__name__}: {err}"}
        ctx.save(out)
    if any("error" in r for r in out["runs"].values()):
        raise CheckFailed("an SFT packing run failed (see the result)")
    return out


def run_zero2(ctx: Context) -> dict:
    """A real DeepSpeed launch (torchrun, one process) of the recipe with ds_configs/zero2.json."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1"]
    cmd += [str(REPO / "recipes/pretrain.py"), *pretrain_argv(ctx, "zero2", steps=10, extra=ZERO2_FLAGS)]
    began = time.perf_counter()
    code = subprocess.run(cmd, cwd=REPO).returncode
    if code:
        raise CheckFailed(f"torchrun exited with {code} (see gpu_check.log)")
    out = {
        **digest_run(ctx.work / "zero2", expected_steps=10),
        "seconds": round(time.perf_counter() - began, 1),
    }
    if out["deepspeed_zero_stage"] != 2:
        out["ok"] = False
    ctx.save(out)
    if not out["ok"]:
        raise CheckFailed(
            f"ZeRO-2 run: stage {out['deepspeed_zero_stage']}, losses finite {out['losses_finite']}"
        )
    return out


def run_generation(ctx: Context) -> dict:
    return load_script("generation").main(generation_argv(ctx))


CHECK_FUNCTIONS = {
    "environment": run_environment,
    "attention": run_attention,
    "pretrain": run_pretrain,
    "pretrain_naive": run_pretrain_naive,
    "sft_packing": run_sft_packing,
    "zero2": run_zero2,
    "generation": run_generation,
    "liger": run_liger,
}
