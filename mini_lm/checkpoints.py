"""Which checkpoints count, which one a resume takes, and what a rerun does to a used output_dir.

    seal_checkpoint("runs/x/checkpoint-40")        # at every save, once every rank has written
    newest_complete("runs/x")                       # -> (Path("runs/x/checkpoint-40"), [skipped...])
    checkpoint = choose_start(args, act=True)       # resume / refuse / move the old run aside

**A checkpoint counts when it is sealed and its seal verifies.** The seal,
``checkpoint-N/checkpoint_complete.json``, is written after every rank has finished writing
(``CheckpointSeal``, in ``on_save``) and after every file of the checkpoint has been fsynced; it
lists each file with its size. A checkpoint counts when its seal parses, every listed file is
there with that size, and ``trainer_state.json`` says step N. Why verified completeness and not a
temporary name + rename: the Trainer (``Trainer._save_checkpoint``, DeepSpeed's
``save_checkpoint``, which writes a shard from every rank) writes straight into
``checkpoint-N``; a rename would mean replacing a private Trainer method, differently for each
Trainer subclass (TRL's), while a seal works for any of them. A seal also catches what a rename
cannot: ``save_total_limit`` rotation deletes old checkpoints with ``shutil.rmtree`` before the
new one is sealed, and a kill during that rmtree leaves a checkpoint with its
``trainer_state.json`` but without its weights; its seal no longer verifies.

A run written without seals (another tool, or mini_lm before seals): when no checkpoint of
output_dir carries one, a checkpoint counts when its ``trainer_state.json`` parses and says its
step, the Trainer's own notion.

A checkpoint that does not count is never deleted: a resume moves it to
``<output_dir>/incomplete-checkpoints/`` and says so. ``--overwrite_output_dir`` renames the
whole previous run to ``<output_dir>.old-<timestamp>`` and starts in an empty dir, so a later
``last`` can only resume this run.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import time
from datetime import datetime
from pathlib import Path

from .errors import UserError

logger = logging.getLogger(__name__)

SEAL = "checkpoint_complete.json"
TRAINER_STATE = "trainer_state.json"
ASIDE = "incomplete-checkpoints"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
# What makes an output_dir hold a run: a fresh run into it must not replace these silently.
RUN_FILES = (
    "config.json",
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "adapter_config.json",
    "adapter_model.safetensors",
    TRAINER_STATE,
    "probes.jsonl",
    "train_results.json",
    "all_results.json",
)


class RunDirError(UserError, FileExistsError):
    """output_dir holds an earlier run and the arguments do not say what to do with it."""


class ResumeError(UserError, FileNotFoundError):
    """The checkpoint to resume from is missing or incomplete."""


# --------------------------------------------------------------------------- sealing


def seal_checkpoint(checkpoint: str | os.PathLike) -> Path:
    """Fsync every file of ``checkpoint``, then write its seal (atomically): the file list with sizes.

    Call it once per checkpoint, on one process, after every process has finished writing.
    """
    root = Path(checkpoint)
    files = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.name != SEAL):
        _fsync(path)
        files[path.relative_to(root).as_posix()] = path.stat().st_size
    for folder in {root, *(p.parent for p in root.rglob("*") if p.is_file())}:
        _fsync(folder)  # the entries themselves (names) are durable too
    step = _step_of(root)
    seal = {"step": step, "sealed_at": datetime.now().isoformat(timespec="seconds"), "files": files}
    _write_atomic(root / SEAL, json.dumps(seal, indent=1))
    return root / SEAL


def checkpoint_problem(checkpoint: str | os.PathLike, sealed_run: bool = True) -> str | None:
    """Why ``checkpoint`` does not count (a short phrase), or None when it does.

    ``sealed_run``: output_dir's checkpoints carry seals, so one without a seal is incomplete.
    """
    root = Path(checkpoint)
    step = _step_of(root)
    seal_path = root / SEAL
    if seal_path.is_file():
        try:
            seal = json.loads(seal_path.read_text(encoding="utf-8"))
            files = dict(seal["files"])
        except (OSError, ValueError, KeyError, TypeError):
            return f"unreadable {SEAL}"
        for name, size in files.items():
            path = root / name
            if not path.is_file():
                return f"{name} is missing"
            if path.stat().st_size != size:
                return f"{name} has {path.stat().st_size} bytes, the seal says {size}"
    elif sealed_run:
        return f"no {SEAL} (the save did not finish)"
    state = read_trainer_state(root)
    if state is None:
        return f"no readable {TRAINER_STATE}"
    if state.get("global_step") != step:
        return f"{TRAINER_STATE} says step {state.get('global_step')}, not {step}"
    return None


def read_trainer_state(checkpoint: str | os.PathLike) -> dict | None:
    try:
        state = json.loads((Path(checkpoint) / TRAINER_STATE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def training_finished(checkpoint: str | os.PathLike, max_steps: int) -> bool:
    """The checkpoint holds the last step of the run (``max_steps``, or its own run's when <= 0).

    Resuming such a checkpoint, the HF Trainer trains one step more (it checks ``max_steps`` only
    after a step) and saves checkpoint-(N+1): a run killed after its last checkpoint (in the final
    save or that checkpoint's probe) then ended unlike the uninterrupted one. ``run_training`` only
    finishes such a run."""
    state = read_trainer_state(checkpoint) or {}
    target = max_steps if max_steps > 0 else state.get("max_steps", 0)
    return bool(target) and state.get("global_step", 0) >= target


def checkpoint_dirs(output_dir: str | os.PathLike) -> list[Path]:
    """``checkpoint-N`` folders of output_dir, oldest step first."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and _CHECKPOINT.match(p.name)]
    return sorted(found, key=_step_of)


def newest_complete(output_dir: str | os.PathLike) -> tuple[Path | None, list[tuple[Path, str]]]:
    """(the newest checkpoint that counts or None, [(each one that does not, why)])."""
    dirs = checkpoint_dirs(output_dir)
    sealed_run = any((d / SEAL).is_file() for d in dirs)
    newest, skipped = None, []
    for folder in dirs:
        problem = checkpoint_problem(folder, sealed_run)
        if problem is None:
            newest = folder
        else:
            skipped.append((folder, problem))
    return newest, skipped


def move_aside(checkpoint: Path) -> Path:
    """Move an incomplete checkpoint to ``<output_dir>/incomplete-checkpoints/`` (never delete it)."""
    target = _free_name(checkpoint.parent / ASIDE / checkpoint.name)
    target.parent.mkdir(parents=True, exist_ok=True)
    checkpoint.rename(target)
    return target


# --------------------------------------------------------------------------- the start of a run


def choose_start(args, act: bool) -> str | None:
    """The checkpoint a run starts from (None: from scratch), from ``resume_from_checkpoint`` and
    ``overwrite_output_dir``; ``act``: this process moves things (the main one; the others only
    read). Raises ``RunDirError`` / ``ResumeError`` for what a user must decide.

    - none asked: refuse an output_dir that holds a run (checkpoints or a final model);
    - ``overwrite_output_dir``: rename the previous run to ``<output_dir>.old-<timestamp>``;
    - ``last`` / ``true``: the newest complete checkpoint (incomplete ones are moved aside and
      named), or from scratch when there is none;
    - a path: that checkpoint, which must be complete.

    After it, ``args.resume_from_checkpoint`` is the chosen path (or None) and
    ``args.overwrite_output_dir`` is False, so calling it again is harmless.
    """
    wanted = args.resume_from_checkpoint
    wanted = None if wanted is None or str(wanted).lower() in ("", "false", "none") else str(wanted)
    overwrite = bool(getattr(args, "overwrite_output_dir", False))
    if wanted and overwrite:
        raise RunDirError(
            f"--resume_from_checkpoint {wanted} and --overwrite_output_dir both given: continue the run "
            "or start over, not both"
        )
    output_dir = Path(args.output_dir)
    if overwrite:
        if act:
            _set_previous_run_aside(output_dir)
        args.overwrite_output_dir = False
        checkpoint = None
    elif wanted is None:
        _refuse_used_dir(output_dir)
        checkpoint = None
    elif wanted.lower() in ("last", "true"):
        checkpoint = _last(output_dir, act)
    else:
        checkpoint = _given(Path(wanted))
    args.resume_from_checkpoint = checkpoint
    return checkpoint


def describe_resume(checkpoint: str | os.PathLike) -> str:
    """'resuming from checkpoint-40 (step 40, epoch 0.31)'."""
    state = read_trainer_state(checkpoint) or {}
    epoch = state.get("epoch")
    epoch = f"{epoch:.4g}" if isinstance(epoch, (int, float)) else "?"
    return f"resuming from {Path(checkpoint).name} (step {state.get('global_step', '?')}, epoch {epoch})"


def run_entries(output_dir: Path) -> list[str]:
    """What of a run output_dir holds: checkpoint folders and final-model / run files."""
    if not output_dir.is_dir():
        return []
    names = [p.name for p in checkpoint_dirs(output_dir)]
    return names + [name for name in RUN_FILES if (output_dir / name).is_file()]


def _refuse_used_dir(output_dir: Path) -> None:
    held = run_entries(output_dir)
    if held:
        shown = ", ".join(held[:4]) + (f" and {len(held) - 4} more" if len(held) > 4 else "")
        raise RunDirError(
            f"{output_dir} already holds a run ({shown}): pass --resume_from_checkpoint last to "
            "continue it, --overwrite_output_dir true to start over (the old run is moved to "
            f"{output_dir}.old-<time>), or choose another --output_dir"
        )


def _set_previous_run_aside(output_dir: Path) -> None:
    if not output_dir.is_dir() or not any(output_dir.iterdir()):
        return
    target = _free_name(output_dir.with_name(f"{output_dir.name}.old-{time.strftime('%Y%m%d-%H%M%S')}"))
    held = run_entries(output_dir)
    output_dir.rename(target)
    output_dir.mkdir()
    logger.warning(
        "overwrite_output_dir: the previous run (%s) is now in %s; %s starts empty",
        ", ".join(held[:4]) + (" ..." if len(held) > 4 else "") or "no checkpoint or model",
        target,
        output_dir,
    )


def _last(output_dir: Path, act: bool) -> str | None:
    newest, skipped = newest_complete(output_dir)
    for folder, problem in skipped:
        if act:
            target = move_aside(folder)
            logger.warning("skipping %s: %s; moved to %s", folder.name, problem, target)
        else:
            logger.info("skipping %s: %s", folder.name, problem)
    if newest is None:
        logger.warning(
            "resume_from_checkpoint=last but %s has no complete checkpoint: starting from scratch",
            output_dir,
        )
        return None
    logger.warning(describe_resume(newest))
    return str(newest)


def _given(path: Path) -> str:
    if not path.is_dir():
        raise ResumeError(f"resume_from_checkpoint: no checkpoint dir at {path}")
    sealed_run = any((d / SEAL).is_file() for d in checkpoint_dirs(path.parent))
    problem = checkpoint_problem(path, sealed_run)
    if problem is not None:
        raise ResumeError(
            f"resume_from_checkpoint {path} is incomplete ({problem}): pass --resume_from_checkpoint "
            "last to take the newest complete one, or another checkpoint"
        )
    logger.warning(describe_resume(path))
    return str(path)


def whole_run_train_loss(log_history: list[dict], metrics: dict) -> dict:
    """``{"train_loss": mean over every step of the run}`` from the logged losses, or {} when they
    do not cover every step up to the last one (then the Trainer's own value, which covers only
    this ``train()`` call, stays).

    The Trainer's ``train_loss`` is the mean over the steps of this call: after a resume, only the
    resumed part. The log history (restored from the checkpoint) holds every logged window; each
    entry's loss is the mean of the steps since the previous one. ``CheckpointSeal`` makes the
    Trainer log at every save and at the last step, so the windows cover the whole run. A window
    whose loss is not finite (a skipped bad step) is left out and its steps counted.

    >>> whole_run_train_loss([{"loss": 4.0, "step": 2}, {"loss": 2.0, "step": 3}], {"train_loss": 2.0})
    {'train_loss': 3.3333333333333335}
    """
    total = steps = left_out = last = 0
    for entry in log_history:
        if "loss" not in entry or "step" not in entry:
            continue
        length, last = entry["step"] - last, entry["step"]
        if isinstance(entry["loss"], (int, float)) and math.isfinite(entry["loss"]):
            total, steps = total + entry["loss"] * length, steps + length
        else:
            left_out += length
    final = max((e.get("step", 0) for e in log_history), default=0)
    if not steps or last != final or "train_loss" not in metrics:
        return {}
    return {"train_loss": total / steps, **({"train_loss_steps_left_out": left_out} if left_out else {})}


# --------------------------------------------------------------------------- helpers


def _step_of(path: Path) -> int:
    match = _CHECKPOINT.match(path.name)
    return int(match.group(1)) if match else -1


def _free_name(path: Path) -> Path:
    candidate, n = path, 1
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.name}-{n}")
    return candidate


def _fsync(path: Path) -> None:
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if path.is_dir() else 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return  # e.g. a platform that cannot open directories
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync(path.parent)
