"""Helpers for tests that run launchers: a free port, stand-ins for SLURM's srun/scontrol."""

from __future__ import annotations

import socket
from pathlib import Path

# srun --ntasks-per-node=1 on one machine: the command once per "node" (SLURM_NNODES), concurrently,
# each with its SLURM_NODEID; fails when any of them fails.
FAKE_SRUN = """#!/usr/bin/env bash
while [[ $1 == -* ]]; do shift; done
pids=()
for ((n = 0; n < SLURM_NNODES; n++)); do SLURM_NODEID=$n SLURM_PROCID=$n "$@" & pids+=($!); done
rc=0; for p in "${pids[@]}"; do wait $p || rc=$?; done; exit $rc
"""
FAKE_SCONTROL = "#!/usr/bin/env bash\ntr , '\\n' <<< \"$3\"\n"  # scontrol show hostnames a,b


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fake_slurm_env(bin_dir: Path, repo: Path, path: str, nodelist: str, nodes: int = 2) -> dict[str, str]:
    """Environment of a SLURM job step on this machine; srun and scontrol are the stand-ins above."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name, text in (("srun", FAKE_SRUN), ("scontrol", FAKE_SCONTROL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    return {
        "PATH": f"{bin_dir}:{path}",
        "SLURM_NNODES": str(nodes),
        "SLURM_JOB_ID": "42",
        "SLURM_JOB_NODELIST": nodelist,
        "SLURM_SUBMIT_DIR": str(repo),
    }
