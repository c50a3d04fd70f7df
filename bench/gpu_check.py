"""GPU verification kit: one offline command proves the GPU path on one lent GPU in ~8 minutes.

    bash scripts/build_wheelhouse.sh                  # here: .whl/ (wheels + manifest), .gpu_data/
    python bench/gpu_check.py --dry-run               # here, CPU: plan, wheelhouse, report code
    PYTHONUNBUFFERED=1 python3 bench/gpu_check.py --out "$OUT"                    # there (device tool)
    PYTHONUNBUFFERED=1 python3 bench/gpu_check.py --out "$OUT" --only zero2 --budget 150   # a rerun

There (no network; torch, transformers, accelerate, peft, triton preinstalled) it first installs the
wheels from .whl/ that the machine lacks into a folder on PYTHONPATH (--no-deps, so torch is never
touched: it refuses to go on if torch's version moved), then mini_lm itself, offline. Each check then
runs in its own process group with its own time limit, so a crash, an OOM or a hang costs only that
check; after every check gpu_check.json and gpu_check.md are rewritten under --out. Checks:
environment, attention (packed rows vs eager, with a negative control), pretrain (Qwen2.5-0.5B shape at
2048, bf16, through recipes/pretrain.py), pretrain_naive (bench/train_throughput.py's baseline),
sft_packing (bench/sft_packing.py), zero2 (DeepSpeed ZeRO-2 launch), generation (bench/generation.py),
liger (use_liger_kernel, optional). docs/benchmarks.md has the device command and the table.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))  # bench/ is a folder of scripts: its modules import by name
import wheelhouse  # noqa: E402
from gpu_kit.checks import CHECK_FUNCTIONS, DEFAULT_BUDGET_S, PLAN, Check, CheckFailed, Context  # noqa: E402
from gpu_kit.report import now, render_markdown, write_outputs  # noqa: E402

MIN_CHECK_S = 20  # below this a check is not started


# --------------------------------------------------------------------------- install (on the GPU machine)


def install(wheels: Path, site: Path) -> dict:
    """Wheels the machine lacks (--no-deps, into ``site``), then mini_lm itself, both offline; torch must
    not move. Returns what was installed, what was skipped and why, and requirements left unmet."""
    began = time.perf_counter()
    manifest = wheelhouse.read_manifest(wheels)
    problems = wheelhouse.check_manifest(wheels, manifest)
    if problems:
        raise CheckFailed("wheelhouse: " + "; ".join(problems))
    before = wheelhouse.installed_versions()
    chosen, skipped = wheelhouse.select_wheels(manifest, before)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "install", "--no-index", "--no-deps"]
    pip += ["--no-compile", "--no-cache-dir", "--upgrade", "--target", str(site)]
    if chosen:
        subprocess.run(pip + [str(wheels / w["file"]) for w in chosen], check=True)
    # the project: its isolated build takes setuptools from the wheelhouse (--find-links), nothing else
    subprocess.run(pip + ["--find-links", str(wheels), str(REPO)], check=True)
    sys.path.insert(0, str(site))
    after = wheelhouse.installed_versions()
    if after.get("torch") != before.get("torch"):
        raise CheckFailed(f"torch moved from {before.get('torch')} to {after.get('torch')}: stopping")
    needs = {w["name"]: w["requires"] for w in chosen}
    needs["mini_lm"] = wheelhouse.project_requirements(REPO / "pyproject.toml")
    return {
        "seconds": round(time.perf_counter() - began, 1),
        "site": str(site),
        "installed": [f"{w['name']}=={w['version']}" for w in chosen] + [f"mini_lm=={after.get('mini-lm')}"],
        "skipped": skipped,
        "torch": after.get("torch"),
        "unmet_requirements": wheelhouse.unmet_requirements(needs, after),
    }


# --------------------------------------------------------------------------- orchestration


def child_env(site: Path, work: Path, data: Path) -> dict[str, str]:
    env = dict(os.environ)
    # the installed mini_lm first; the checkout last, should its install have failed (the environment
    # check records which one ran)
    env["PYTHONPATH"] = os.pathsep.join([str(site), *filter(None, [env.get("PYTHONPATH")]), str(REPO)])
    env.update(
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        HF_HOME=str(work / "hf"),
        TOKENIZERS_PARALLELISM="false",
        TORCH_EXTENSIONS_DIR=str(work / "torch_extensions"),
        WANDB_MODE="disabled",
        MINI_LM_DATA=str(data),
        PYTHONUNBUFFERED="1",
    )
    return env


def run_check_process(check: Check, limit: float, work: Path, data: Path, env: dict, log: Path) -> dict:
    """One check in its own process group, killed with its children at ``limit`` seconds."""
    result_path = work / f"{check.name}.json"
    result_path.unlink(missing_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--run-check", check.name]
    cmd += ["--work", str(work), "--data-dir", str(data), "--result", str(result_path)]
    began = time.monotonic()
    with log.open("a", encoding="utf-8") as fh:
        fh.write(f"\n===== {check.name} (limit {limit:.0f} s) =====\n")
        fh.flush()
        start = fh.tell()
        proc = subprocess.Popen(
            cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=REPO, start_new_session=True
        )
        try:
            status = "ok" if proc.wait(timeout=limit) == 0 else "failed"
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the group this call created: the check and its children
            proc.wait()
            status = "timeout"
    result = json.loads(result_path.read_text(encoding="utf-8")) if result_path.is_file() else {}
    error = result.pop("error", None)
    if status != "ok":
        error = error or (
            f"exit code {proc.returncode}" if status == "failed" else f"killed after {limit:.0f} s"
        )
        with log.open(encoding="utf-8") as fh:
            fh.seek(start)
            result["log_tail"] = fh.read()[-2500:]
    return {
        "status": status,
        "seconds": round(time.monotonic() - began, 1),
        "limit_s": round(limit),
        "error": error,
        "result": result,
    }


def run_kit(opts) -> dict:
    import torch

    if not torch.cuda.is_available():
        raise SystemExit(
            "no CUDA device visible: this is the GPU kit (on CPU: python bench/gpu_check.py --dry-run)"
        )
    deadline = time.monotonic() + opts.budget
    out, work, data = Path(opts.out), Path(opts.work), Path(opts.data_dir)
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    report = {"kit": "bench/gpu_check.py", "started": now(), "budget_s": opts.budget, "checks": {}}
    try:
        report["install"] = {"status": "ok", **install(Path(opts.wheelhouse), work / "site")}
    except Exception as err:  # the checks still run: the environment check says what is there
        report["install"] = {"status": "failed", "error": f"{type(err).__name__}: {err}"}
    write_outputs(report, out)
    run_checks(report, selected_checks(opts.only), deadline, work, data, out)
    report["finished"] = now()
    write_outputs(report, out)
    return report


def run_checks(report: dict, checks: list[Check], deadline: float, work: Path, data: Path, out: Path) -> None:
    """Each check in turn, within what is left of the budget; the report is rewritten after each."""
    env = child_env(work / "site", work, data)
    for check in checks:
        left = deadline - time.monotonic()
        if left < MIN_CHECK_S or (check.optional and left < check.budget_s):
            report["checks"][check.name] = {"status": "skipped", "error": f"budget: {left:.0f} s left"}
        else:
            limit = min(check.budget_s, left)
            report["checks"][check.name] = run_check_process(
                check, limit, work, data, env, out / "gpu_check.log"
            )
        write_outputs(report, out)


def selected_checks(only: str | None) -> list[Check]:
    if not only:
        return PLAN
    wanted = only.split(",")
    unknown = sorted(set(wanted) - {c.name for c in PLAN})
    if unknown:
        raise SystemExit(
            f"unknown check(s) {', '.join(unknown)}; choose from {', '.join(c.name for c in PLAN)}"
        )
    return [c for c in PLAN if c.name in wanted]


def child_main(opts) -> int:
    """--run-check NAME: one check in this process; its result (or error) in --result."""
    ctx = Context(data=Path(opts.data_dir), work=Path(opts.work), result=Path(opts.result))
    try:
        ctx.save(CHECK_FUNCTIONS[opts.run_check](ctx))
        return 0
    except BaseException as err:  # noqa: B036 - whatever it was, it goes into the result
        partial = json.loads(ctx.result.read_text(encoding="utf-8")) if ctx.result.is_file() else {}
        partial["error"] = f"{type(err).__name__}: {err}"
        partial["traceback"] = traceback.format_exc()[-4000:]
        ctx.save(partial)
        traceback.print_exc()
        return 1


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="CPU: check plan, wheelhouse and report code")
    parser.add_argument(
        "--out", default=os.environ.get("OUT") or "runs/gpu_check", help="JSON, table and log"
    )
    parser.add_argument(
        "--work", default="/tmp/mini_lm_gpu_check", help="scratch: site-packages, runs, caches"
    )
    parser.add_argument("--wheelhouse", default=str(REPO / ".whl"))
    default_data = REPO / ".gpu_data"
    if not default_data.is_dir():  # here, before build_wheelhouse.sh staged it: read the shared folder
        default_data = Path(os.environ.get("MINI_LM_DATA", REPO.parent / "shared" / "data"))
    parser.add_argument("--data-dir", default=str(default_data))
    parser.add_argument("--budget", type=float, default=DEFAULT_BUDGET_S, help="seconds for install + checks")
    parser.add_argument("--only", default=None, help="comma-separated checks (a rerun of the failed ones)")
    parser.add_argument("--manifest-only", action="store_true", help="dry run: do not hash the wheel files")
    parser.add_argument("--run-check", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--result", default=None, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    opts = make_parser().parse_args(argv)
    if opts.run_check:
        return child_main(opts)
    if opts.dry_run:
        from gpu_kit import dry_run

        # before the plan check imports transformers: see dry_run.import_scan
        sys.meta_path.insert(0, dry_run.RECORDER)
        return dry_run.dry_run(opts)
    report = run_kit(opts)
    print(render_markdown(report))
    return 0 if all(c["status"] == "ok" for c in report["checks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
