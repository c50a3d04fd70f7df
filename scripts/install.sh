#!/usr/bin/env bash
# Create .venv and install mini_lm (+ dev and deepspeed extras), torch first.
# An unpinned torch requirement would pull a multi-GB CUDA build on a CPU machine, so torch is
# installed alone, then pinned through PIP_CONSTRAINT while everything else resolves.
#   bash scripts/install.sh                     # CPU: torch==2.13.0 (a local wheel here)
#   TORCH_SPEC="torch==2.13.0" VENV=.venv bash scripts/install.sh
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
PYTHON=${PYTHON:-python3}

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
pip=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
"${pip[@]}" install --upgrade pip setuptools wheel
"${pip[@]}" install "$TORCH_SPEC"
"$VENV/bin/python" -c "import torch; print('torch==' + torch.__version__.split('+')[0])" > "$VENV/torch-constraint.txt"
export PIP_CONSTRAINT="$PWD/$VENV/torch-constraint.txt"
# deepspeed is an sdist whose setup imports torch: build it against the torch installed above.
"${pip[@]}" install --no-build-isolation "deepspeed>=0.16"
"${pip[@]}" install -e ".[dev,deepspeed]"
"$VENV/bin/python" -c "import mini_lm, torch, transformers; print(f'mini_lm {mini_lm.__version__} ready: torch {torch.__version__}, transformers {transformers.__version__}')"
