"""The import contracts of pyproject.toml's [tool.importlinter] (layers, no cycles, what data,
serving and metrics may import; docs/architecture.md), checked by import-linter in the normal
test suite, with a negative control: the same contracts on a copy of the package that breaks each."""

import shutil
import subprocess
import sys
from pathlib import Path

from .conftest import REPO

CONTRACTS = {
    "acyclic": "no import cycle",
    "layers": "layers: a module imports only from layers below its own",
    "data": "data never imports models",
    "serving": "serving never imports training or data",
    "metrics": "metrics imports nothing of mini_lm",
}


RUN = "from importlinter.cli import lint_imports_command; lint_imports_command()"  # `lint-imports`


def lint(package_root: Path) -> subprocess.CompletedProcess:
    """import-linter in a process of its own, so it reads the mini_lm under ``package_root``."""
    return subprocess.run(
        [sys.executable, "-c", RUN, "--config", str(REPO / "pyproject.toml"), "--no-cache", "--no-logo"],
        cwd=package_root,
        env={"PYTHONPATH": str(package_root), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_package_keeps_every_import_contract():
    result = lint(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    for name in CONTRACTS.values():
        assert f"{name}" in result.stdout and "BROKEN" not in result.stdout


def test_each_contract_catches_its_violation(tmp_path):
    """Negative control: one planted import per contract, each reported broken."""
    copy = tmp_path / "mini_lm"
    shutil.copytree(REPO / "mini_lm", copy, ignore=shutil.ignore_patterns("__pycache__"))
    plant = {
        "tokenization.py": "from .data import corpus",  # a cycle, and tokenization above data
        "data/packing.py": "from .. import models",  # data -> models
        "serving/stops.py": "from .. import training",  # serving -> training
        "metrics.py": "from . import labels",  # metrics -> mini_lm
    }
    for module, line in plant.items():
        path = copy / module
        path.write_text(path.read_text(encoding="utf-8") + f"\n{line}  # noqa\n", encoding="utf-8")
    result = lint(tmp_path)
    assert result.returncode != 0
    for name in CONTRACTS.values():
        line = next(line for line in result.stdout.splitlines() if line.startswith(name))
        assert line.endswith("BROKEN"), line
