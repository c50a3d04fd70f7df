"""The GPU kit's luggage: which wheels the GPU machine lacks, their manifest, the data files, the size.

    python bench/wheelhouse.py specs                  # name==version lines scripts/build_wheelhouse.sh fetches
    python bench/wheelhouse.py manifest .whl          # write .whl/manifest.json from the wheels there
    python bench/wheelhouse.py stage-data .gpu_data   # copy the kit's data files from ../shared/data
    python bench/wheelhouse.py size .whl .gpu_data    # what would travel: tree + carried folders, MiB

The GPU machine (one H200, no network) has Python 3.12 and the packages in GPU_PREINSTALLED (read
off the machine's image, /work/.library/device/KINDS.md, 2026-11-17); everything else the kit
imports travels as wheels in an ignored folder of the checkout, named in the device tool's carry,
with the tracked tree under TRAVEL_LIMIT_MIB. bench/gpu_check.py --dry-run checks all of it here.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
TRAVEL_LIMIT_MIB = 64
MANIFEST = "manifest.json"

# The GPU machine's image ("cuda"), package names as KINDS.md lists them; versions where a session saw them.
GPU_PYTHON = (3, 12)
GPU_PLATFORMS = [f"manylinux_2_{n}_x86_64" for n in range(39, 4, -1)] + [
    "manylinux2014_x86_64",
    "linux_x86_64",
]
GPU_KNOWN_VERSIONS = {
    "accelerate": "1.15.0",
    "huggingface-hub": "1.33.0",
    "numpy": "2.5.2",
    "safetensors": "0.8.0",
    "tokenizers": "0.23.2",
    "torch": "2.11.0",
    "transformers": "5.17.0",
    "triton": "3.6.0",
}
GPU_PREINSTALLED = frozenset(
    canonicalize_name(n)
    for n in """absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch
    build certifi charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings
    cuda-core cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet
    filelock flatbuffers flax fonttools formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore
    httpx huggingface-hub humanize hypothesis idna imageio iniconfig interface-meta jax jax-cuda13-pjrt
    jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib kiwisolver lazy-loader lightning lightning-utilities
    linear-operator lineax llvmlite lxml markdown markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes
    mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind narwhals networkx ninja numba
    numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime
    nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse
    nvidia-cusparselt-cu13 nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx
    onnx-ir onnxruntime onnxscript opencv-python-headless optax opt-einsum opt-einsum-fx optimistix
    orbax-checkpoint packaging pandas pathspec patsy peft pillow pip pluggy portalocker prometheus-client
    propcache protobuf psutil py-cpuinfo pyarrow pybind11 pygments pyparsing pyproject-hooks pyre-extensions
    pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist python-dateutil
    pytorch-lightning pyyaml regex requests rich sacrebleu safetensors scikit-build-core scikit-image
    scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools shellingham simplejson six
    sortedcontainers statsmodels sympy tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl
    tifffile tiktoken timm tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics
    torchvision tqdm transformers treescope triton typer typing-extensions typing-inspect urllib3 uvloop
    wadler-lindig werkzeug wheel wrapt xarray xxhash yarl zipp""".split()
)
# Never carried: the GPU's own CUDA build of these must stay (a wheel here would replace it).
NEVER_CARRY = ("torch", "triton", "nvidia-", "cuda-")


@dataclass(frozen=True)
class Carried:
    """One wheel the kit brings. ``when``: missing = the GPU machine lacks it; if_unmet = it has the
    package, but maybe at a version another carried wheel rejects; build = only for building mini_lm."""

    name: str
    version: str | None  # None: the version installed here (what CI tests)
    how: str = "download"  # download (pip download, binary only) | sdist (pip wheel --no-deps)
    when: str = "missing"


CARRIED = [
    Carried("datasets", None),
    Carried("dill", None),
    Carried("multiprocess", None),
    Carried("deepspeed", None, how="sdist"),  # pure-Python wheel, its CUDA ops left to JIT
    Carried("hjson", None),
    Carried("pydantic", None),
    Carried("pydantic-core", None),
    Carried("annotated-types", None),
    Carried("typing-inspection", None),
    Carried("liger-kernel", "0.8.5"),
    Carried("typing-extensions", None, when="if_unmet"),  # pydantic wants >= 4.16
    Carried("fsspec", None, when="if_unmet"),  # datasets wants <= 2026.9.0
    Carried("setuptools", None, when="build"),  # mini_lm's build needs >= 77 (PEP 639 license)
]
# mini_lm dependencies the kit does not need on the GPU machine, and why.
NOT_NEEDED = {
    "wandb": "the kit trains with report_to none",
    "fastapi": "the OpenAI-compatible server is not exercised by the kit",
    "uvicorn": "the OpenAI-compatible server is not exercised by the kit",
}
# Data the kit reads, relative to the shared data folder; copied into the checkout to travel.
KIT_DATA = ["tokenizers/qwen2.5", "corpus/zh/hongloumeng.txt", "sft/sharegpt_zh_1k.jsonl"]


def gpu_environment() -> dict[str, str]:
    """PEP 508 marker values of the GPU machine (Linux x86_64, CPython 3.12)."""
    env = default_environment()
    version = ".".join(map(str, GPU_PYTHON))
    env.update(
        python_version=version,
        python_full_version=f"{version}.3",
        sys_platform="linux",
        platform_system="Linux",
        platform_machine="x86_64",
        os_name="posix",
        implementation_name="cpython",
        platform_python_implementation="CPython",
    )
    return env


def gpu_tags() -> set[Tag]:
    """Wheel tags pip accepts on the GPU machine."""
    python = GPU_PYTHON
    tags = set(
        cpython_tags(python, abis=[f"cp{python[0]}{python[1]}", "abi3", "none"], platforms=GPU_PLATFORMS)
    )
    return tags | set(compatible_tags(python, f"cp{python[0]}{python[1]}", GPU_PLATFORMS))


def wheel_specs() -> list[str]:
    """'how name==version' lines for scripts/build_wheelhouse.sh; unpinned names take the version here."""
    lines = []
    for c in CARRIED:
        version = c.version or importlib.metadata.version(c.name)
        lines.append(f"{c.how} {c.name}=={version}")
    return lines


def requirements_of(metadata: str, extras: tuple[str, ...] = ()) -> list[str]:
    """Requires-Dist lines that apply on the GPU machine (markers evaluated there, no extras)."""
    out = []
    for line in metadata.splitlines():
        if line.startswith("Requires-Dist:"):
            req = Requirement(line.split(":", 1)[1].strip())
            if req.marker is None or any(
                req.marker.evaluate(gpu_environment() | {"extra": e}) for e in ("", *extras)
            ):
                out.append(str(req).split(";")[0].strip())
    return out


def describe_wheel(path: Path) -> dict:
    """Manifest entry: name, version, sha256, size, tags and GPU-side requirements of one wheel file."""
    name, version, _, tags = parse_wheel_filename(path.name)
    with zipfile.ZipFile(path) as zf:
        metadata = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        requires = requirements_of(zf.read(metadata).decode("utf-8"))
    carried = {canonicalize_name(c.name): c for c in CARRIED}.get(name)
    return {
        "file": path.name,
        "name": str(name),
        "version": str(version),
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "size": path.stat().st_size,
        "tags": sorted(str(t) for t in tags),
        "requires": requires,
        "when": carried.when if carried else "missing",
    }


def write_manifest(folder: Path) -> dict:
    wheels = [describe_wheel(p) for p in sorted(folder.glob("*.whl"))]
    manifest = {
        "python": ".".join(map(str, GPU_PYTHON)),
        "platform": "manylinux_2_28_x86_64",
        "total_bytes": sum(w["size"] for w in wheels),
        "wheels": wheels,
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def read_manifest(folder: Path) -> dict:
    path = folder / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no wheelhouse manifest; build it with bash scripts/build_wheelhouse.sh"
        )
    return json.loads(path.read_text(encoding="utf-8"))


# --------------------------------------------------------------------------- checks (here and there)


def check_manifest(folder: Path, manifest: dict, verify_files: bool = True) -> list[str]:
    """Problems with a wheelhouse: forbidden or foreign-platform wheels, two versions of one
    project, files that do not match their sha256/size, carried projects with no wheel."""
    problems, versions, tags = [], {}, gpu_tags()
    for w in manifest["wheels"]:
        name = canonicalize_name(w["name"])
        if name.startswith(NEVER_CARRY):
            problems.append(
                f"{w['file']}: {name} must never travel (the GPU machine's own build would be replaced)"
            )
        if not tags & {Tag(*t.split("-")) for t in w["tags"]}:
            problems.append(f"{w['file']}: tags {', '.join(w['tags'])} do not install on CPython 3.12 x86_64")
        versions.setdefault(name, set()).add(w["version"])
        path = folder / w["file"]
        if not verify_files:
            continue
        if not path.is_file():
            problems.append(f"{w['file']}: listed in the manifest but not in {folder}")
        elif path.stat().st_size != w["size"] or hashlib.sha256(path.read_bytes()).hexdigest() != w["sha256"]:
            problems.append(f"{w['file']}: size or sha256 differs from the manifest (rebuild it)")
    problems += [
        f"{n}: {len(v)} versions ({', '.join(sorted(v))}); keep one"
        for n, v in versions.items()
        if len(v) > 1
    ]
    missing = {canonicalize_name(c.name) for c in CARRIED} - set(versions)
    problems += [
        f"{n}: in the kit's list (bench/wheelhouse.py CARRIED) but no wheel: rebuild" for n in sorted(missing)
    ]
    return problems


def project_requirements(pyproject: Path, extras: tuple[str, ...] = ("deepspeed", "liger")) -> list[str]:
    """mini_lm's dependencies plus the named extras, from pyproject.toml."""
    import tomllib

    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    optional = project.get("optional-dependencies", {})
    return list(project["dependencies"]) + [r for e in extras for r in optional.get(e, [])]


def check_closure(manifest: dict, roots: dict[str, str]) -> tuple[list[str], list[str]]:
    """Walk the requirements from ``roots`` ({requirement: who needs it}) through the manifest's wheels.

    Each one must be preinstalled on the GPU machine (at a version that fits, where the version is
    known) or carried. Returns (problems, notes); notes are the versions nobody could check here.
    """
    wheels = {canonicalize_name(w["name"]): w for w in manifest["wheels"] if w["when"] != "build"}
    problems, notes, seen = [], [], set()
    queue = list(roots.items())
    while queue:
        text, needed_by = queue.pop(0)
        req = Requirement(text)
        name = canonicalize_name(req.name)
        if (name, str(req.specifier)) in seen or name in NOT_NEEDED:
            continue
        seen.add((name, str(req.specifier)))
        carried, known = wheels.get(name), GPU_KNOWN_VERSIONS.get(name)
        gpu_has = name in GPU_PREINSTALLED
        if carried and (carried["when"] == "missing" or (known and not req.specifier.contains(known))):
            if not req.specifier.contains(carried["version"], prereleases=True):
                problems.append(
                    f"{name}=={carried['version']} (carried) does not satisfy {text} ({needed_by})"
                )
            queue += [(r, f"{name} {carried['version']}") for r in carried["requires"]]
        elif gpu_has and known:
            if not req.specifier.contains(known, prereleases=True):
                problems.append(f"the GPU machine's {name} {known} does not satisfy {text} ({needed_by})")
        elif gpu_has:
            fallback = f"; the carried {carried['version']} is installed if not" if carried else ""
            if req.specifier:
                notes.append(
                    f"{name}: GPU version unknown here, needs {req.specifier} ({needed_by}){fallback}"
                )
        else:
            problems.append(f"{name} ({needed_by}) is neither on the GPU machine nor in the wheelhouse")
    return problems, sorted(set(notes))


def select_wheels(manifest: dict, installed: dict[str, str]) -> tuple[list[dict], list[str]]:
    """(wheels to install, reasons for the others) given the {name: version} installed there."""
    chosen, skipped = [], []
    for w in manifest["wheels"]:
        name = canonicalize_name(w["name"])
        if w["when"] == "build":
            skipped.append(f"{name}: build-only (offers setuptools to the isolated build of mini_lm)")
        elif w["when"] == "missing" and name not in installed:
            chosen.append(w)
        elif w["when"] == "missing":
            skipped.append(f"{name}: {installed[name]} already installed")
    wants = [Requirement(r) for w in chosen for r in w["requires"]]
    for w in manifest["wheels"]:
        name = canonicalize_name(w["name"])
        if w["when"] != "if_unmet":
            continue
        specs = [r.specifier for r in wants if canonicalize_name(r.name) == name]
        have = installed.get(name)
        if have is None or not all(s.contains(have, prereleases=True) for s in specs):
            chosen.append(w)
        else:
            skipped.append(
                f"{name}: {have} already installed and satisfies {', '.join(map(str, specs)) or 'all'}"
            )
    return chosen, skipped


def unmet_requirements(requirements: dict[str, list[str]], installed: dict[str, str]) -> list[str]:
    """{owner: [requirement]} checked against installed {name: version}: what does not fit."""
    unmet = []
    for owner, reqs in requirements.items():
        for text in reqs:
            req = Requirement(text)
            name = canonicalize_name(req.name)
            if name in NOT_NEEDED:
                continue
            have = installed.get(name)
            if have is None:
                unmet.append(f"{owner} needs {text}: not installed")
            elif not req.specifier.contains(Version(have), prereleases=True):
                unmet.append(f"{owner} needs {text}: {have} installed")
    return unmet


def installed_versions() -> dict[str, str]:
    """{canonical name: version} of what this interpreter imports: where a project is installed twice
    (a carried wheel on PYTHONPATH over the image's), the first on sys.path, as import finds it."""
    found = {}
    for dist in importlib.metadata.distributions():  # in sys.path order
        found.setdefault(canonicalize_name(dist.metadata["Name"]), dist.version)
    return found


# --------------------------------------------------------------------------- data and size


def stage_data(source: Path, target: Path) -> list[dict]:
    """Copy KIT_DATA from the shared data folder into ``target`` (an ignored folder that travels)."""
    copied = []
    for rel in KIT_DATA:
        src, dst = source / rel, target / rel
        if not src.exists():
            raise FileNotFoundError(f"{src}: the kit needs it; set MINI_LM_DATA or --from to the shared data")
        if src.is_dir():
            shutil.copytree(src, dst, dirs_exist_ok=True)
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
        copied.append({"path": rel, "bytes": folder_bytes(dst)})
    return copied


def folder_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() or p.is_symlink())


def travel_size(carried: list[Path], repo: Path = REPO) -> dict:
    """Bytes that travel to the GPU machine: tracked and untracked-not-ignored files, plus ``carried``."""
    out = subprocess.run(
        ["git", "-C", str(repo), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        check=True,
    ).stdout.decode()
    tree = sum((repo / f).lstat().st_size for f in set(out.split("\0")) if f and os.path.lexists(repo / f))
    extra = {str(p): folder_bytes(p) if p.exists() else 0 for p in carried}
    total = tree + sum(extra.values())
    return {
        "tree_bytes": tree,
        "carried_bytes": extra,
        "total_bytes": total,
        "limit_bytes": TRAVEL_LIMIT_MIB * 2**20,
        "fits": total <= TRAVEL_LIMIT_MIB * 2**20,
    }


def mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in ("specs", "manifest", "stage-data", "size"):
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    command, args = argv[0], [Path(a) for a in argv[1:]]
    if command == "specs":
        print("\n".join(wheel_specs()))
    elif command == "manifest":
        manifest = write_manifest(args[0])
        problems = check_manifest(args[0], manifest)
        for w in manifest["wheels"]:
            print(f"{w['name']:>20} {w['version']:<12} {mib(w['size']):>9}  {w['file']}")
        print(f"{len(manifest['wheels'])} wheels, {mib(manifest['total_bytes'])}")
        for p in problems:
            print(f"PROBLEM: {p}", file=sys.stderr)
        return 1 if problems else 0
    elif command == "stage-data":
        source = Path(os.environ.get("MINI_LM_DATA", REPO.parent / "shared" / "data"))
        for item in stage_data(source, args[0]):
            print(f"{item['path']:>30} {mib(item['bytes']):>9}")
    else:
        size = travel_size(args)
        print(f"tree {mib(size['tree_bytes'])}")
        for path, n in size["carried_bytes"].items():
            print(f"{path} {mib(n)}")
        print(
            f"total {mib(size['total_bytes'])} of {TRAVEL_LIMIT_MIB} MiB: {'fits' if size['fits'] else 'TOO BIG'}"
        )
        return 0 if size["fits"] else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
