"""The code base stays formatted and lint-clean: `ruff format` and `ruff check` as CI runs them."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PATHS = ["mini_lm", "recipes", "bench", "scripts", "tests"]


def _ruff() -> list[str]:
    exe = Path(sys.executable).with_name("ruff")
    return [str(exe)] if exe.exists() else [shutil.which("ruff") or "ruff"]


def test_ruff_format_leaves_every_file_unchanged():
    done = subprocess.run([*_ruff(), "format", "--check", *PATHS], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, f"run `ruff format {' '.join(PATHS)}`:\n{done.stdout}{done.stderr}"


def test_ruff_check_passes():
    done = subprocess.run([*_ruff(), "check", *PATHS], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
