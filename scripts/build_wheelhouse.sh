#!/usr/bin/env bash
# Build what bench/gpu_check.py takes to the GPU machine (no network there), into ignored folders:
#   .whl/       wheels for CPython 3.12 manylinux x86_64 of what the machine lacks + manifest.json
#   .gpu_data/  the few data files the kit reads (../shared/data does not travel)
# then print what would travel (tracked tree + both folders; the device tool takes at most 64 MiB).
#   bash scripts/build_wheelhouse.sh
#   WHEELHOUSE=/tmp/w GPU_DATA=/tmp/d bash scripts/build_wheelhouse.sh
# The list and the versions live in bench/wheelhouse.py (CARRIED: the versions installed here, which CI
# tests). Never torch, triton or nvidia-*: the machine's CUDA builds stay. Binary packages come from
# `pip download --only-binary=:all:` for the target platform; DeepSpeed is an sdist, built here with
# `pip wheel --no-deps` into a pure-Python wheel (its CUDA ops JIT-compile there when first used).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
WHEELHOUSE=${WHEELHOUSE:-.whl}
GPU_DATA=${GPU_DATA:-.gpu_data}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

rm -rf "$WHEELHOUSE" && mkdir -p "$WHEELHOUSE"
platforms=()
for n in 28 27 24 17; do platforms+=(--platform "manylinux_2_${n}_x86_64"); done
platforms+=(--platform manylinux2014_x86_64)
pip=("$PY" -m pip --disable-pip-version-check -q)

while read -r how spec; do
    case "$how" in
        download)
            "${pip[@]}" download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
                --abi cp312 --abi abi3 --abi none "${platforms[@]}" -d "$WHEELHOUSE" "$spec" ;;
        sdist)  # built against the torch installed here; the wheel itself holds no compiled code
            "${pip[@]}" wheel --no-deps --no-build-isolation -w "$WHEELHOUSE" "$spec" ;;
        *) echo "unknown kind '$how' for $spec" >&2; exit 1 ;;
    esac
done < <("$PY" bench/wheelhouse.py specs)

"$PY" bench/wheelhouse.py manifest "$WHEELHOUSE"
rm -rf "$GPU_DATA" && "$PY" bench/wheelhouse.py stage-data "$GPU_DATA"
"$PY" bench/wheelhouse.py size "$WHEELHOUSE" "$GPU_DATA"
