"""The GPU kit's dry run, on CPU: the plan and its command lines, the wheelhouse against what the
project and the kit import, the size that travels, and the report code on a synthetic report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import wheelhouse

from .checks import (
    BENCH,
    CHECK_FUNCTIONS,
    DEFAULT_BUDGET_S,
    INSTALL_BUDGET_S,
    LIGER_FLAGS,
    PLAN,
    PRETRAIN_VARIANTS,
    RECIPE_CONFIG,
    REPO,
    ZERO2_FLAGS,
    Context,
    digest_run,
    generation_argv,
    load_script,
    naive_argv,
    pretrain_argv,
    run_attention,
    sft_argv,
)
from .report import FORMATTERS, now, render_markdown, targets

SCANNED_MODULES = [
    "mini_lm.models",
    "mini_lm.loss",
    "mini_lm.training",
    "mini_lm.callbacks",
    "mini_lm.data.pretrain",
    "mini_lm.data.sft",
    "mini_lm.data.sft_packing",
    "mini_lm.generation",
    "transformers.integrations.deepspeed",
    "deepspeed",
    "torch.distributed.run",
    "torch.nn.attention.flex_attention",
]
SCANNED_SCRIPTS = ["pretrain", "sft", "train_throughput", "sft_packing", "generation"]


def plan_problems(data: Path) -> list[str]:
    """The plan fits its budget, every check has a function and a formatter, its files and data are
    there, and every command line it will run parses with the script's own parser."""
    problems = []
    required = INSTALL_BUDGET_S + sum(c.budget_s for c in PLAN if not c.optional)
    if required > DEFAULT_BUDGET_S:
        problems.append(f"plan: install + required checks take {required} s > budget {DEFAULT_BUDGET_S} s")
    names = [c.name for c in PLAN]
    if len(set(names)) != len(names) or set(names) != set(CHECK_FUNCTIONS) or set(names) != set(FORMATTERS):
        problems.append(
            f"plan: checks {names} vs functions {sorted(CHECK_FUNCTIONS)} vs formatters {sorted(FORMATTERS)}"
        )
    for rel in (RECIPE_CONFIG, "recipes/pretrain.py", "ds_configs/zero2.json", "pyproject.toml"):
        if not (REPO / rel).is_file():
            problems.append(f"plan: {rel} is missing")
    problems += [f"data: {data / rel} is missing" for rel in wheelhouse.KIT_DATA if not (data / rel).exists()]
    return problems + argv_problems(Context(data=data, work=Path("/nonexistent/gpu_check")))


def argv_problems(ctx: Context) -> list[str]:
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    from mini_lm.config import PRETRAIN_ARGUMENTS, ConfigError, parse_config
    from mini_lm.validation import validate

    problems = []
    runs = {f"pretrain {n}": pretrain_argv(ctx, n, extra=f) for n, f in PRETRAIN_VARIANTS.items()}
    runs |= {
        "zero2": pretrain_argv(ctx, "zero2", 10, ZERO2_FLAGS),
        "liger": pretrain_argv(ctx, "l", extra=LIGER_FLAGS),
    }
    for name, argv in runs.items():
        try:
            validate(parse_config(PRETRAIN_ARGUMENTS, argv))
        except ConfigError as err:
            if not (name == "liger" and "use_liger_kernel" in str(err)):  # on CPU that refusal is right
                problems.append(f"{name} command line: {err}")
        finally:
            unset_hf_deepspeed_config()  # parsing --deepspeed registers a process-wide config
    throughput = load_script("train_throughput")
    opts = throughput.make_parser().parse_args(naive_argv(ctx))
    throughput.select(throughput.gpu_shapes(), opts.shapes, "shape")
    throughput.select(throughput.VARIANTS, opts.variants, "variant")
    sft = load_script("sft_packing")
    for attn in ("auto", "sdpa"):
        sft.make_parser().parse_args(sft_argv(ctx, attn))
    load_script("generation").parse_args(generation_argv(ctx))
    return problems


class ImportRecorder:
    """A sys.meta_path hook: for each top-level module, the module whose import first loaded it."""

    def __init__(self):
        self.importers: dict[str, str] = {}

    def find_spec(self, name, path=None, target=None):
        top = name.split(".")[0]
        if top not in self.importers and top not in sys.modules:
            frame = sys._getframe(1)
            while frame is not None and frame.f_globals.get("__name__", "").startswith(
                ("importlib", "_frozen")
            ):
                frame = frame.f_back
            self.importers[top] = frame.f_globals.get("__name__", "?").split(".")[0] if frame else "?"
        return None  # only watching: the normal finders load it


RECORDER = ImportRecorder()


OURS = ("mini_lm", "gpu_kit", "gpu_check", "wheelhouse", "kit_")  # module-name prefixes of the kit's own code


def import_scan() -> dict:
    """What the checks import: {"importers": {top-level module: its first importer}, "own": {top-level
    module: a file of ours importing it}}. "own" reads the import statements (lazy ones too) of every
    module of ours that got loaded. Recorded in this process when the recorder was installed before
    anything heavy was imported (the CLI), else in a fresh interpreter."""
    import importlib

    if "transformers" not in RECORDER.importers:
        return _import_scan_in_fresh_interpreter()
    for name in SCANNED_MODULES:
        importlib.import_module(name)
    for name in SCANNED_SCRIPTS:
        load_script(name)
    own = {}
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if name.startswith(OURS) and path and path.endswith(".py"):
            own |= {
                top: f"{Path(path).relative_to(REPO)}"
                for top in _imported_names(Path(path))
                if top not in own
            }
    # failed optional imports (try: import x) reach the finder too: keep what was really loaded
    return {"importers": {m: by for m, by in RECORDER.importers.items() if m in sys.modules}, "own": own}


def _imported_names(path: Path) -> set[str]:
    import ast

    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names - {"__future__"}


def _import_scan_in_fresh_interpreter() -> dict:
    code = (
        f"import sys, json; sys.path.insert(0, {str(BENCH)!r}); from gpu_kit import dry_run; "
        "sys.meta_path.insert(0, dry_run.RECORDER); import transformers; print(json.dumps(dry_run.import_scan()))"
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO)
    if proc.returncode:
        raise RuntimeError(f"import scan failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def scan_problems(scan: dict, manifest: dict) -> list[str]:
    """Every module the kit's own code imports, and every module a carried package imported, must come
    from a distribution preinstalled there or carried (or be one NOT_NEEDED names, with its reason).
    What a preinstalled package imports is the image's own business."""
    import importlib.metadata

    from packaging.utils import canonicalize_name

    owners = {
        m: {canonicalize_name(d) for d in ds} for m, ds in importlib.metadata.packages_distributions().items()
    }
    carried = {canonicalize_name(w["name"]) for w in manifest["wheels"]}
    importers, needed = scan["importers"], dict(scan["own"])
    expanding = {m for m in importers if carried & owners.get(m, set())}
    for module, by in importers.items():  # one level is enough: carried packages are leaves or carried
        if by in expanding:
            needed.setdefault(module, f"{by} (carried)")
    problems = []
    for module, by in sorted(needed.items()):
        if (
            module in sys.stdlib_module_names
            or module.startswith(OURS + ("_",))
            or module == "cython_runtime"
        ):
            continue  # the standard library, the kit's own modules, extension internals
        dists = owners.get(module)
        if not dists:
            problems.append(f"import scan: {module} (imported by {by}) belongs to no installed distribution")
        elif not dists & (wheelhouse.GPU_PREINSTALLED | carried | set(wheelhouse.NOT_NEEDED)):
            problems.append(
                f"import scan: {module} (imported by {by}, from {', '.join(sorted(dists))}) is neither on the "
                "GPU machine nor in the wheelhouse"
            )
    return problems


def wheelhouse_problems(
    wheels: Path, manifest: dict, verify_files: bool = True
) -> tuple[list[str], list[str]]:
    """(problems, notes): the manifest itself, and every requirement of the project and of the kit's
    imports met on the GPU machine by what is preinstalled there or carried."""
    problems = wheelhouse.check_manifest(wheels, manifest, verify_files)
    roots = {r: "mini_lm" for r in wheelhouse.project_requirements(REPO / "pyproject.toml")}
    closure, notes = wheelhouse.check_closure(manifest, roots)
    return problems + closure + scan_problems(import_scan(), manifest), notes


def synthetic_report(data: Path, scratch: Path) -> dict:
    """A report as the GPU run writes it, for the report code: the attention check run for real on CPU
    (eager vs SDPA, tiny model), recipe runs digested from trainer states written here, the other
    results in the shape their scripts return. Every status is represented. Figures are invented."""
    scratch.mkdir(parents=True, exist_ok=True)
    attention = run_attention(Context(data=data, work=scratch), device="cpu")
    runs = {}
    for name, mfu, stage in (("full", 0.41, None), ("chunked", 0.47, None), ("zero2", 0.44, 2)):
        run = scratch / name
        run.mkdir(exist_ok=True)
        logs = [{"loss": 12.0 - i, "tokens_per_second": 1e5 * (1 + i), "mfu": mfu} for i in range(3)]
        (run / "trainer_state.json").write_text(json.dumps({"global_step": 30, "log_history": logs}))
        info = {"attn_implementation": "sdpa", "precision": "bf16", "deepspeed_zero_stage": stage}
        (run / "run_info.json").write_text(
            json.dumps(info | {"distributed_type": "DEEPSPEED" if stage else "NO"})
        )
        runs[name] = {**digest_run(run, expected_steps=30), "seconds": 31.0, "peak_memory_gib": 60.2}
    sft_run = {"attn_implementation": "flex_attention", "packed_over_padded": 2.3}
    sft_run["results"] = {m: {"real_tokens_per_second": v} for m, v in (("packed", 2.3e5), ("padded", 1e5))}
    rows = [
        {
            "variant": "mini_lm",
            "attention": "sdpa",
            "tokens_per_second": 2e5,
            "vs_naive": 1.8,
            "mfu": 0.45,
            "peak_memory_gib": 50.0,
        },
        {
            "variant": "naive",
            "attention": "eager",
            "tokens_per_second": 1.1e5,
            "vs_naive": 1.0,
            "mfu": 0.25,
            "peak_memory_gib": 70.0,
        },
    ]
    environment = {
        "gpu": "NVIDIA H200 (synthetic)", "memory_gib": 139.8, "torch": "2.11.0+cu130", "cuda": "13.0",
        "versions": {"transformers": "5.17.0", "deepspeed": "0.19.8"}, "bf16_matmul_tflops": 790.0,
        "attention": {"flash_attn_importable": False, "flex_attention": True, "auto_dense_rows": "sdpa", "auto_packed_rows": "flex_attention"},
    }  # fmt: skip
    generation = {
        "by_batch": [{"batch": 1, "tokens_per_second": 90.0}, {"batch": 8, "tokens_per_second": 650.0}]
    }
    generation |= {"ratios": {"batch8_over_batch1": {"value": 7.2}}, "kv_cache": {"speedup": 9.0}}
    results = {
        "environment": ("ok", environment),
        "attention": ("ok", attention),
        "pretrain": ("ok", {"variants": {"full": runs["full"], "chunked": runs["chunked"]}}),
        "pretrain_naive": ("ok", {"rows": rows}),
        "sft_packing": ("ok", {"runs": {"auto": sft_run, "sdpa": {"error": "CheckFailed: synthetic"}}}),
        "zero2": ("timeout", runs["zero2"]),
        "generation": ("failed", generation),
        "liger": ("skipped", None),
    }
    checks = {
        name: {"status": status, "seconds": 10.0, "limit_s": 60, "result": result, "error": None if status == "ok" else f"synthetic {status}"}
        for name, (status, result) in results.items()
    }  # fmt: skip
    return {
        "started": now(),
        "budget_s": DEFAULT_BUDGET_S,
        "install": {"status": "ok", "seconds": 9.0, "installed": ["x"]},
        "checks": checks,
    }


def report_problems(report: dict) -> list[str]:
    """What the table must show for a report: one row per check, its status, the three targets."""
    text = render_markdown(report)
    problems = [
        f"report: no row for {c.name}"
        for c in PLAN
        if f"| {c.name} | {report['checks'][c.name]['status']} |" not in text
    ]
    problems += [f"report: '{row}' not formatted" for row in text.splitlines() if "not formatted" in row]
    values = [t["value"] for t in targets(report)]
    if values != [0.47, 1.8, 2.3] or "| 47.0% | yes |" not in text:
        problems.append(f"report: targets read {values}, expected [0.47, 1.8, 2.3]")
    return problems


def dry_run(opts) -> int:
    data, wheels = Path(opts.data_dir), Path(opts.wheelhouse)
    print(f"plan ({DEFAULT_BUDGET_S} s budget; install {INSTALL_BUDGET_S} s):")
    for c in PLAN:
        print(f"  {c.name:<15} {c.budget_s:>4} s{' (optional)' if c.optional else ''}  {c.what}")
    problems, notes = plan_problems(data), []
    try:
        manifest = wheelhouse.read_manifest(wheels)
        wheel_problems, notes = wheelhouse_problems(wheels, manifest, verify_files=not opts.manifest_only)
        problems += wheel_problems
        print(
            f"wheelhouse {wheels}: {len(manifest['wheels'])} wheels, {wheelhouse.mib(manifest['total_bytes'])}"
        )
    except FileNotFoundError as err:
        problems.append(str(err))
    size = wheelhouse.travel_size([wheels, data] if data.resolve().is_relative_to(REPO) else [wheels])
    print(
        f"travels: tree {wheelhouse.mib(size['tree_bytes'])} + "
        + " + ".join(f"{Path(p).name} {wheelhouse.mib(n)}" for p, n in size["carried_bytes"].items())
        + f" = {wheelhouse.mib(size['total_bytes'])} of {wheelhouse.TRAVEL_LIMIT_MIB} MiB"
    )
    if not size["fits"]:
        problems.append(
            f"travel size {wheelhouse.mib(size['total_bytes'])} > {wheelhouse.TRAVEL_LIMIT_MIB} MiB"
        )

    with tempfile.TemporaryDirectory(prefix="gpu_check_dry_") as scratch:
        report = synthetic_report(data, Path(scratch))
    problems += report_problems(report)
    print("\nreport code on a synthetic report (figures invented; attention: the CPU check, run for real):\n")
    print(render_markdown(report))
    for note in notes:
        print(f"note: {note}")
    for problem in problems:
        print(f"PROBLEM: {problem}")
    print("dry run:", "FAILED" if problems else "ok")
    return 1 if problems else 0
