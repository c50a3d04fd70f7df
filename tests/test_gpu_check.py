"""The GPU kit on CPU: its dry run (plan, command lines, wheelhouse vs the project's and the kit's
imports, travel size, report code) against a small fake wheelhouse, and the real one if it was built;
the wheelhouse rules (forbidden wheels, tags, hashes, dependency closure, what gets installed there);
failure isolation of the checks (a failing or hanging check is recorded, the next one still runs);
the digest of a real recipe run. No wheel is downloaded and no GPU figure is produced here."""

import hashlib
import importlib.metadata
import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from .conftest import REPO

sys.path.insert(0, str(REPO / "bench"))
import gpu_check  # noqa: E402
import wheelhouse  # noqa: E402
from gpu_kit import checks, dry_run, report  # noqa: E402

LIGER_REQUIRES = ["torch>=2.1.2", "triton>=2.3.1"]


def fake_wheel(folder: Path, name: str, version: str, requires: list[str], tag: str = "py3-none-any") -> Path:
    """A wheel file with just a METADATA (what the manifest reads)."""
    dist = name.replace("-", "_")
    path = folder / f"{dist}-{version}-{tag}.whl"
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    metadata += "".join(f"Requires-Dist: {r}\n" for r in requires)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{dist}-{version}.dist-info/METADATA", metadata)
    return path


@pytest.fixture(scope="module")
def fake_wheelhouse(tmp_path_factory) -> Path:
    """One wheel per carried project, at the version installed here, with its real requirements."""
    folder = tmp_path_factory.mktemp("whl")
    for c in wheelhouse.CARRIED:
        if c.version:  # not installed here (liger-kernel)
            version, requires = c.version, LIGER_REQUIRES
        else:
            dist = importlib.metadata.distribution(c.name)
            version, requires = dist.version, wheelhouse.requirements_of(dist.read_text("METADATA"))
        fake_wheel(folder, c.name, version, requires)
    wheelhouse.write_manifest(folder)
    return folder


def wheelhouses():
    real = REPO / ".whl" / wheelhouse.MANIFEST
    return [
        "fake",
        pytest.param("real", marks=pytest.mark.skipif(not real.is_file(), reason="no .whl built")),
    ]


@pytest.mark.parametrize("which", wheelhouses())
def test_dry_run(which, fake_wheelhouse, shared_data):
    wheels = fake_wheelhouse if which == "fake" else REPO / ".whl"
    cmd = [sys.executable, str(REPO / "bench/gpu_check.py"), "--dry-run", "--wheelhouse", str(wheels)]
    cmd += ["--data-dir", str(shared_data)]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env)
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-3000:]
    assert out.rstrip().endswith("dry run: ok") and "PROBLEM" not in out
    for check in checks.PLAN:  # the plan, and a row for every check in the synthetic table
        assert f"  {check.name} " in out and f"| {check.name} |" in out
    assert "travels: tree" in out and "of 64 MiB" in out
    # the attention row comes from the attention check itself, run on CPU (eager reference vs SDPA)
    row = next(line for line in out.splitlines() if line.startswith("| attention | ok |"))
    assert "sdpa: diff" in row and "unmasked" in row


def test_manifest_rules(tmp_path, fake_wheelhouse):
    manifest = wheelhouse.read_manifest(fake_wheelhouse)
    assert wheelhouse.check_manifest(fake_wheelhouse, manifest) == []
    assert {w["name"] for w in manifest["wheels"]} == {c.name for c in wheelhouse.CARRIED}
    # negative controls, one rule each
    for wheel, message in [
        (fake_wheel(tmp_path, "torch", "2.13.0", []), "must never travel"),  # the GPU's CUDA torch stays
        (fake_wheel(tmp_path, "xxhash", "4.1.0", [], "cp311-cp311-manylinux_2_17_x86_64"), "do not install"),
        (fake_wheel(tmp_path, "dill", "0.3.9", []), "dill: 2 versions"),
    ]:
        bad = {**manifest, "wheels": manifest["wheels"] + [wheelhouse.describe_wheel(wheel)]}
        assert [p for p in wheelhouse.check_manifest(tmp_path, bad, verify_files=False) if message in p], (
            message
        )
    tampered = json.loads(json.dumps(manifest))
    tampered["wheels"][0]["sha256"] = hashlib.sha256(b"other").hexdigest()
    assert any("sha256 differs" in p for p in wheelhouse.check_manifest(fake_wheelhouse, tampered))
    missing = {**manifest, "wheels": [w for w in manifest["wheels"] if w["name"] != "hjson"]}
    assert any(
        p.startswith("hjson: in the kit's list") for p in wheelhouse.check_manifest(fake_wheelhouse, missing)
    )


def test_dependency_closure(fake_wheelhouse):
    manifest = wheelhouse.read_manifest(fake_wheelhouse)
    roots = {r: "mini_lm" for r in wheelhouse.project_requirements(REPO / "pyproject.toml")}
    problems, notes = wheelhouse.check_closure(manifest, roots)
    assert problems == [] and any(n.startswith("pyarrow: GPU version unknown") for n in notes)
    # the GPU machine's transformers 5.17 is inside pyproject's range (a version outside would be named)
    assert "transformers 5.17.0 does not satisfy" not in " ".join(problems)
    without_dill = {**manifest, "wheels": [w for w in manifest["wheels"] if w["name"] != "dill"]}
    problems, _ = wheelhouse.check_closure(without_dill, roots)
    assert problems and all(
        "dill" in p and "neither on the GPU machine nor in the wheelhouse" in p for p in problems
    )
    problems, _ = wheelhouse.check_closure(manifest, {"transformers>=5.20": "a future pin"})
    assert problems == [
        "the GPU machine's transformers 5.17.0 does not satisfy transformers>=5.20 (a future pin)"
    ]


def test_import_scan_flags_what_the_gpu_lacks(fake_wheelhouse):
    manifest = wheelhouse.read_manifest(fake_wheelhouse)
    scan = {"importers": {}, "own": {"yaml": "mini_lm/config.py", "datasets": "mini_lm/data/sft.py"}}
    assert dry_run.scan_problems(scan, manifest) == []
    scan["own"]["openai"] = "mini_lm/x.py"  # installed here (dev extra), absent there, not carried
    scan["importers"]["pytz"] = "pandas"  # a preinstalled package's import: the image's business
    scan["importers"]["hjson"] = "deepspeed"  # carried, imported by a carried package: fine
    assert dry_run.scan_problems(scan, manifest) == [
        "import scan: openai (imported by mini_lm/x.py, from openai) is neither on the GPU machine nor in the wheelhouse"
    ]


def test_wheels_installed_there(fake_wheelhouse):
    manifest = wheelhouse.read_manifest(fake_wheelhouse)
    gpu = {n: v for n, v in wheelhouse.GPU_KNOWN_VERSIONS.items()} | {
        "typing-extensions": "4.12.2",
        "fsspec": "2026.9.0",
    }
    chosen, skipped = wheelhouse.select_wheels(manifest, gpu)
    names = {w["name"] for w in chosen}
    assert {"datasets", "deepspeed", "pydantic", "liger-kernel"} <= names
    assert "typing-extensions" in names  # 4.12.2 there, pydantic needs >= 4.16
    assert "fsspec" not in names and "setuptools" not in names  # satisfied there / build-only
    assert any(s.startswith("fsspec: 2026.9.0 already installed") for s in skipped)
    chosen, _ = wheelhouse.select_wheels(manifest, gpu | {"datasets": "5.2.0", "typing-extensions": "4.16.0"})
    assert "datasets" not in {w["name"] for w in chosen} and "typing-extensions" not in {
        w["name"] for w in chosen
    }
    unmet = wheelhouse.unmet_requirements(
        {"datasets": ["pyarrow>=24.0.0", "dill<0.4.2"]}, {"pyarrow": "23.0.1"}
    )
    assert unmet == [
        "datasets needs pyarrow>=24.0.0: 23.0.1 installed",
        "datasets needs dill<0.4.2: not installed",
    ]


def test_targets_and_table():
    def result(mfu, over_naive, packed):
        variants = {"full": {"ok": True, "mfu": mfu}}
        return {
            "started": "t",
            "budget_s": 450,
            "checks": {
                "pretrain": {"status": "ok", "result": {"variants": variants}},
                "pretrain_naive": {"status": "ok", "result": {"rows": [{"variant": "mini_lm", "vs_naive": over_naive}]}},
                "sft_packing": {"status": "failed", "result": {"runs": {"auto": {"packed_over_padded": packed}}}},
            },
        }  # fmt: skip

    assert [t["met"] for t in report.targets(result(0.5, 1.6, 2.1))] == [True, True, True]
    assert [t["met"] for t in report.targets(result(0.3, 1.2, None))] == [False, False, None]
    text = report.render_markdown(result(0.3, 1.2, None))
    assert "| 45.0% | 30.0% | NO |" in text and "| 2.00 | - | not measured |" in text
    assert "| pretrain | ok |" in text and "(result not formatted" in text  # a bad result costs its cell only


def test_a_failing_or_hanging_check_does_not_stop_the_others(tmp_path):
    """On CPU the environment check fails (no CUDA): recorded with its error and log, and the next
    check runs; one whose limit is reached is killed; one past the budget is skipped."""
    out, work = tmp_path / "out", tmp_path / "work"
    out.mkdir()
    work.mkdir()
    plan = {c.name: c for c in checks.PLAN}
    rep = {"started": "t", "budget_s": 60, "checks": {}}
    roomy = checks.Check(
        "environment", 300, "fails on CPU; a loaded CI machine may take a while to get there"
    )
    short = checks.Check("generation", 2, "killed at its limit")
    gpu_check.run_checks(rep, [roomy, short], time.monotonic() + 600, work, REPO, out)
    env, gen = rep["checks"]["environment"], rep["checks"]["generation"]
    assert env["status"] == "failed" and env["error"] and "Traceback" in env["result"]["log_tail"]
    assert gen["status"] == "timeout" and gen["error"] == "killed after 2 s"
    gpu_check.run_checks(rep, [plan["zero2"]], time.monotonic() + 5, work, REPO, out)
    assert rep["checks"]["zero2"]["status"] == "skipped"
    written = json.loads((out / "gpu_check.json").read_text())
    assert set(written["checks"]) == {"environment", "generation", "zero2"}
    assert "| environment | failed |" in (out / "gpu_check.md").read_text()


def test_a_check_keeps_what_it_measured_before_failing(tmp_path, monkeypatch):
    def half_done(ctx):
        ctx.save({"first": 1})
        raise RuntimeError("second part broke")

    monkeypatch.setitem(checks.CHECK_FUNCTIONS, "generation", half_done)
    monkeypatch.setattr(gpu_check, "CHECK_FUNCTIONS", checks.CHECK_FUNCTIONS)
    result = tmp_path / "r.json"
    argv = [
        "--run-check",
        "generation",
        "--work",
        str(tmp_path),
        "--data-dir",
        str(tmp_path),
        "--result",
        str(result),
    ]
    assert gpu_check.main(argv) == 1
    saved = json.loads(result.read_text())
    assert (
        saved["first"] == 1
        and saved["error"] == "RuntimeError: second part broke"
        and "half_done" in saved["traceback"]
    )


def test_travel_size_counts_tree_and_carried(tmp_path):
    (tmp_path / "w.whl").write_bytes(b"x" * 1000)
    size = wheelhouse.travel_size([tmp_path])
    assert size["carried_bytes"] == {str(tmp_path): 1000} and size["tree_bytes"] > 100_000
    assert size["total_bytes"] == size["tree_bytes"] + 1000 and size["fits"]


@pytest.mark.slow
def test_digest_of_a_real_recipe_run(tmp_path, shared_data):
    """What the kit reads from recipes/pretrain.py's output: a real (tiny, CPU) run's trainer state."""
    from .conftest import run_module_main

    argv = ["--train_files", str(shared_data / "corpus/zh/hongloumeng.txt"), "--max_train_documents", "200"]
    argv += ["--tokenizer_vocab_size", "320", "--hidden_size", "32", "--num_hidden_layers", "2"]
    argv += ["--num_attention_heads", "4", "--max_position_embeddings", "64", "--block_size", "32"]
    argv += ["--per_device_train_batch_size", "4", "--max_steps", "6", "--logging_steps", "2"]
    argv += ["--report_to", "none", "--save_strategy", "no", "--validation_split", "0", "--probe", "false"]
    argv += ["--lm_loss", "chunked", "--output_dir", str(tmp_path / "run"), "--disable_tqdm", "true"]
    run_module_main(REPO / "recipes/pretrain.py", argv)
    digest = checks.digest_run(tmp_path / "run", expected_steps=6)
    assert digest["ok"] and digest["steps"] == 6 and digest["losses_finite"]
    assert digest["tokens_per_second"] > 0 and digest["mfu"] is None  # no known peak on CPU
    assert (digest["attn_implementation"], digest["precision"]) == ("sdpa", "fp32")
    assert digest["first_loss"] is not None and digest["last_loss"] is not None
