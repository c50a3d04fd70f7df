"""Fault injection: a tiny pretraining run is SIGKILLed at random moments (during steps, saves and
probes) and resumed each time with ``--resume_from_checkpoint last``; every run must end with the
uninterrupted run's final weights, per-step losses and probe answers.

    python bench/crash_resume.py --kills 24 --out bench/results/crash_resume.json   # ~10 min, 2 busy cores
    python bench/crash_resume.py --kills 3 --trials 1                               # a quick look

The run: recipes/pretrain.py, a 32-wide 2-layer Qwen2, 24 steps, a checkpoint every 4 steps with
``save_total_limit 2`` (so rotation deletes checkpoints too), two probe questions at every save.
Each process is forked from a zygote that has imported torch and transformers once (a start
costs ~1 s, not ~10 s of imports); it is an ordinary process, SIGKILLed like any other.

How a kill moment is chosen: a callback prints phase markers: ``step N`` when step N begins,
``save N`` when the Trainer is about to write checkpoint-N (until it is sealed), ``probe N`` when
its probe starts. For each kill a phase (step / save / probe) and an occurrence (the 1st-11th step or
1st-3rd save of that process) are drawn, and after that marker the process is SIGKILLed after a random delay
within that phase's median duration in the uninterrupted run. The phase a kill lands in is the
last marker before it. Each of ``--trials`` runs is killed ``--kills / --trials`` times, resumed
with ``last`` after each, then left to finish.

Compared with the uninterrupted run: final ``model.safetensors`` (every tensor bit-equal), the
per-step training losses (``trainer_state.json``), and probes.jsonl (entries lost or extra, raw
lines duplicated or torn, answers differing). Target: 100% of resumes succeed and every run
matches. Prints a table and writes JSON (--out).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PHASES = ("step", "save", "probe")
MARK = "@@phase"
RUN = [
    "--model_family", "qwen2", "--hidden_size", "32", "--num_hidden_layers", "2",
    "--num_attention_heads", "4", "--max_position_embeddings", "64", "--block_size", "32",
    "--per_device_train_batch_size", "4", "--max_steps", "24", "--logging_steps", "1",
    "--save_strategy", "steps", "--save_steps", "4", "--save_total_limit", "2",
    "--eval_strategy", "no", "--report_to", "none", "--disable_tqdm", "true",
    "--probe_max_new_tokens", "8", "--seed", "0", "--dataloader_num_workers", "0",
]  # fmt: skip


# --------------------------------------------------------------------------- the worker


def worker(argv: list[str]) -> int:
    """recipes/pretrain.py with phase markers on stdout (added where the recipe adds its callbacks)."""
    import importlib.util

    from transformers import TrainerCallback

    from mini_lm.callbacks import CheckpointProbe
    from mini_lm.errors import run_main

    def mark(name: str, step: int) -> None:
        print(f"{MARK} {name} {step} {time.time():.4f}", flush=True)

    class StepMarks(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            mark("step", state.global_step + 1)

        def on_step_end(self, args, state, control, **kwargs):
            if control.should_save:
                mark("save", state.global_step)

        def on_train_end(self, args, state, control, **kwargs):
            mark("end", state.global_step)

    class ProbeMark(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            mark("probe", state.global_step)

    spec = importlib.util.spec_from_file_location("pretrain_recipe", REPO / "recipes/pretrain.py")
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    add = recipe.add_recipe_callbacks

    def add_with_marks(trainer, *args, **kwargs):  # whatever the recipe passes (probe args, shape)
        add(trainer, *args, **kwargs)
        callbacks = trainer.callback_handler.callbacks
        probe = next((i for i, c in enumerate(callbacks) if isinstance(c, CheckpointProbe)), len(callbacks))
        callbacks.insert(probe, ProbeMark())  # after the seal, before the probe
        trainer.add_callback(StepMarks())

    recipe.add_recipe_callbacks = add_with_marks
    return run_main(recipe.main, argv)


# --------------------------------------------------------------------------- the controller


class Zygote:
    """A process that has imported torch, transformers and the recipe once and forks each run from
    there (a run then starts in ~1 s instead of ~10 s of imports). Single-threaded, so forking is
    safe; every child starts from the same state. Its children are ordinary processes: they are
    SIGKILLed and leave their files exactly as a killed training run would."""

    def __init__(self):
        cmd = [sys.executable, str(Path(__file__).resolve()), "--zygote"]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
        self.proc = subprocess.Popen(
            cmd, cwd=REPO, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        reply = self.ask("ping")
        if reply != "pong":
            raise RuntimeError(f"the zygote did not start (it answered {reply!r}; its errors are on stderr)")

    def ask(self, *words: str) -> str:
        self.proc.stdin.write(" ".join(words) + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def zygote() -> None:
    """The --zygote loop: ``start LOG ARGV_JSON`` -> pid, ``poll PID`` / ``wait PID`` -> exit code."""
    # Replies go to the real stdout alone; anything a library prints (wandb: "Running in WANDB
    # offline mode") goes to stderr, so it can never be read as a reply.
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    import importlib  # noqa: F401  (the imports below are the point: they are shared by every child)

    import datasets  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401

    import mini_lm.callbacks  # noqa: F401
    import mini_lm.data.pretrain  # noqa: F401
    import mini_lm.training  # noqa: F401

    for line in sys.stdin:
        command, *rest = line.rstrip("\n").split(" ", 2)
        if command == "ping":
            reply = "pong"
        elif command == "start":
            reply = str(_fork(rest[0], json.loads(rest[1])))
        else:
            pid = int(rest[0])
            flags = os.WNOHANG if command == "poll" else 0
            done, status = os.waitpid(pid, flags)
            reply = "running" if done == 0 else str(os.waitstatus_to_exitcode(status))
        print(reply, file=replies, flush=True)


def _fork(log: str, argv: list[str]) -> int:
    pid = os.fork()
    if pid:
        return pid
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    sys.stdout = os.fdopen(1, "w", buffering=1)
    sys.stderr = os.fdopen(2, "w", buffering=1)
    code = 1
    try:
        code = worker(argv)
    except BaseException:  # a bug in the worker: its traceback in the log, not lost to os._exit
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


class Run:
    """One process of the run (forked by the zygote), its phase markers read from its log as they come."""

    def __init__(self, zygote: Zygote, out: Path, extra: list[str], log: Path):
        self.zygote, self.log = zygote, log
        self.offset = log.stat().st_size if log.exists() else 0
        argv = [*extra, "--output_dir", str(out)]
        self.pid = int(zygote.ask("start", str(log), json.dumps(argv)))
        self.code: int | None = None
        self.last: tuple[str, int] | None = None
        self._pending = ""

    def marks(self) -> list[tuple[str, int, float]]:
        """Markers written since the last call."""
        with open(self.log, encoding="utf-8", errors="replace") as f:
            f.seek(self.offset)
            text = f.read()
            self.offset = f.tell()
        lines = (self._pending + text).split("\n")
        self._pending = lines.pop()
        found = []
        for line in lines:
            if line.startswith(MARK):
                _, name, step, stamp = line.split()
                found.append((name, int(step), float(stamp)))
        if found:
            self.last = found[-1][:2]
        return found

    def running(self) -> bool:
        if self.code is None:
            reply = self.zygote.ask("poll", str(self.pid))
            self.code = None if reply == "running" else int(reply)
        return self.code is None

    def wait_for(self, phase: str, skip: int, timeout: float = 900) -> bool:
        """Block until the ``skip + 1``-th marker of ``phase``; False when the process ended first."""
        deadline, seen = time.time() + timeout, 0
        while time.time() < deadline:
            for name, _, _ in self.marks():
                if name == phase:
                    if seen == skip:
                        return True
                    seen += 1
            if not self.running():
                return False
            time.sleep(0.005)
        return False

    def kill_after(self, delay: float) -> tuple[str, int] | None:
        """SIGKILL after ``delay`` s; the phase it landed in (None: the process had ended)."""
        time.sleep(delay)
        self.marks()
        if not self.running():
            return None
        os.kill(self.pid, signal.SIGKILL)
        self.finish()
        self.marks()
        return self.last

    def finish(self) -> int:
        if self.code is None:
            self.code = int(self.zygote.ask("wait", str(self.pid)))
        return self.code


def phase_durations(marks: list[tuple[str, int, float]]) -> dict[str, float]:
    """Median seconds from each phase's marker to the next marker, in the uninterrupted run."""
    spans: dict[str, list[float]] = {p: [] for p in PHASES}
    for (name, _, began), (_, _, ended) in zip(marks, marks[1:]):
        if name in spans:
            spans[name].append(ended - began)
    return {p: statistics.median(s) if s else 0.05 for p, s in spans.items()}


def reference(zygote: Zygote, work: Path, extra: list[str], log: Path) -> tuple[Path, dict[str, float]]:
    out = work / "reference"
    run = Run(zygote, out, extra, log)
    if run.finish():
        raise SystemExit(f"the uninterrupted run failed: see {log}")
    return out, phase_durations(run.marks())


def trial(zygote: Zygote, out: Path, extra: list[str], kills: int, durations: dict, rng, log: Path) -> dict:
    """Kill one run ``kills`` times, resuming after each with ``last``; then let it finish.

    A resume is a start that finds a checkpoint; it fails when its process exits non-zero by itself."""
    landed, resumes, failed, finished = [], 0, [], False
    for _ in range(kills + 1):
        resumes += any(out.glob("checkpoint-*"))
        run = Run(zygote, out, [*extra, "--resume_from_checkpoint", "last"], log)
        phase = rng.choice(PHASES)
        skip = rng.randint(0, 10 if phase == "step" else 2)  # steps come 4x as often as saves
        if len(landed) == kills or not run.wait_for(phase, skip=skip):
            rc = run.finish()
            failed += [rc] if rc else []
            finished = rc == 0
            break  # left to finish, or it finished before the chosen moment came
        at = run.kill_after(rng.uniform(0, 0.9 * durations[phase]))
        if at is None:  # it ended during the delay
            rc = run.finish()
            failed += [rc] if rc else []
            finished = rc == 0
            break
        landed.append({"aimed": phase, "phase": at[0], "step": at[1]})
    if not finished:  # the last kill came at the very end: one more start completes it
        resumes += any(out.glob("checkpoint-*"))
        rc = Run(zygote, out, [*extra, "--resume_from_checkpoint", "last"], log).finish()
        failed += [rc] if rc else []
    return {"kills": landed, "resumes": resumes, "failed_resumes": failed}


# --------------------------------------------------------------------------- comparison


def compare(ref: Path, out: Path) -> dict:
    """What differs between a killed-and-resumed run and the uninterrupted one."""
    from safetensors.torch import load_file

    result: dict = {"finished": (out / "model.safetensors").is_file()}
    if not result["finished"]:
        return {**result, "weights_equal": False, "losses_equal": False}
    a, b = load_file(ref / "model.safetensors"), load_file(out / "model.safetensors")
    result["weights_equal"] = a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)
    result["max_weight_diff"] = max(((a[k] - b[k]).abs().max().item() for k in a if k in b), default=None)
    ref_losses, losses = step_losses(ref), step_losses(out)
    result["losses_equal"] = ref_losses == losses
    result["max_loss_diff"] = max(
        (abs(ref_losses[s] - losses.get(s, float("inf"))) for s in ref_losses), default=0.0
    )
    result.update(compare_probes(ref / "probes.jsonl", out / "probes.jsonl"))
    result["moved_aside"] = sorted(p.name for p in (out / "incomplete-checkpoints").glob("*"))
    return result


def step_losses(run: Path) -> dict[int, float]:
    history = json.loads((run / "trainer_state.json").read_text())["log_history"]
    return {h["step"]: h["loss"] for h in history if "loss" in h}


def probe_lines(path: Path) -> tuple[list[dict], int]:
    records, torn = [], 0
    for line in path.read_text(encoding="utf-8").splitlines() if path.is_file() else []:
        try:
            records.append(json.loads(line))
        except ValueError:
            torn += bool(line.strip())
    return records, torn


def compare_probes(ref_path: Path, path: Path) -> dict:
    def key(r):
        return r["step"], r["mode"], r["question_id"], r["decoding"]

    ref, _ = probe_lines(ref_path)
    got, torn = probe_lines(path)
    want = {key(r): r for r in ref}
    have = {key(r): r for r in got}  # newest per key, as ProbeStore reads it
    counts = Counter(key(r) for r in got)
    return {
        "probe_entries": len(want),
        "probes_lost": len(want.keys() - have.keys()),
        "probes_extra": len(have.keys() - want.keys()),
        "probe_lines_duplicated": sum(n - 1 for n in counts.values()),
        "probe_lines_torn": torn,
        "probe_answers_differ": sum(
            want[k]["answer"] != have[k]["answer"] for k in want.keys() & have.keys()
        ),
    }


# --------------------------------------------------------------------------- report


def summarize(trials: list[dict]) -> dict:
    kills = [k for t in trials for k in t["kills"]]
    ok = [t for t in trials if t["weights_equal"] and t["losses_equal"] and not t["probes_lost"]]
    return {
        "kills": len(kills),
        "kills_by_phase": dict(Counter(k["phase"] for k in kills)),
        "resumes": sum(t["resumes"] for t in trials),
        "resumes_failed": sum(len(t["failed_resumes"]) for t in trials),
        "runs": len(trials),
        "runs_matching": len(ok),
        "probes_lost": sum(t["probes_lost"] for t in trials),
        "probes_extra": sum(t["probes_extra"] for t in trials),
        "probe_lines_duplicated": sum(t["probe_lines_duplicated"] for t in trials),
        "probe_lines_torn": sum(t["probe_lines_torn"] for t in trials),
        "probe_answers_differ": sum(t["probe_answers_differ"] for t in trials),
        "checkpoints_moved_aside": sum(len(t["moved_aside"]) for t in trials),
    }


def table(summary: dict) -> str:
    by_phase = summary["kills_by_phase"]
    rows = [
        ("SIGKILLs", summary["kills"]),
        *[(f"  landing in {p}", by_phase.get(p, 0)) for p in (*PHASES, *sorted(set(by_phase) - set(PHASES)))],
        ("resumes (--resume_from_checkpoint last)", summary["resumes"]),
        ("resumes that failed", summary["resumes_failed"]),
        ("runs", summary["runs"]),
        ("runs equal to the uninterrupted one (weights + per-step losses)", summary["runs_matching"]),
        ("incomplete checkpoints moved aside", summary["checkpoints_moved_aside"]),
        ("probe entries lost", summary["probes_lost"]),
        ("probe entries extra", summary["probes_extra"]),
        ("probe lines duplicated (raw file)", summary["probe_lines_duplicated"]),
        ("probe lines torn (raw file)", summary["probe_lines_torn"]),
        ("probe answers differing", summary["probe_answers_differ"]),
    ]
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"| {name:<{width}} | {value:>5} |" for name, value in rows)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kills", type=int, default=24, help="SIGKILLs in all")
    parser.add_argument(
        "--trials", type=int, default=6, help="runs the kills are spread over (more when a run ends early)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", default=None, help="folder for the runs (default: a temporary one)")
    parser.add_argument("--out", default="runs/bench/crash_resume.json", help="the JSON report")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    work = Path(args.work or tempfile.mkdtemp(prefix="crash_resume_"))
    work.mkdir(parents=True, exist_ok=True)
    extra = [*RUN, *inputs(work)]
    began = time.time()
    log = work / "runs.log"
    zygote = Zygote()
    try:
        ref, durations = reference(zygote, work, extra, log)
        print(f"uninterrupted run: {ref}; phase medians (s): {durations}", flush=True)
        trials, per_trial = [], -(-args.kills // args.trials)
        # A run may finish before a drawn moment comes: the next runs take the kills it did not get.
        while sum(len(t["kills"]) for t in trials) < args.kills and len(trials) < 3 * args.trials:
            left = args.kills - sum(len(t["kills"]) for t in trials)
            out = work / f"trial_{len(trials)}"
            result = trial(zygote, out, extra, min(per_trial, left), durations, rng, log)
            result.update(compare(ref, out))
            trials.append(result)
            print(f"trial {len(trials) - 1}: {result}", flush=True)
    finally:
        zygote.close()
    summary = summarize(trials)
    report = {
        "summary": summary,
        "phase_seconds": durations,
        "trials": trials,
        "seconds": time.time() - began,
    }
    report["run"] = extra
    print(table(summary))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2), encoding="utf-8")
    print(f"wrote {args.out}")
    return report


def inputs(work: Path) -> list[str]:
    """The corpus, a trained tokenizer (not retrained by every process) and two probe questions."""
    from mini_lm.data.synthetic import write_world
    from mini_lm.tokenization import train_bpe_tokenizer

    bios = write_world(work / "world", seed=0, n_people=30, bios_per_person=2)["bios"]
    tokenizer = work / "tokenizer"
    if not (tokenizer / "tokenizer.json").is_file():
        texts = [json.loads(line)["text"] for line in Path(bios).read_text(encoding="utf-8").splitlines()]
        train_bpe_tokenizer(texts, vocab_size=320, output_dir=tokenizer)
    questions = work / "questions.yaml"
    questions.write_text("questions:\n  - prompt: 王伟出生于\n  - prompt: 李娜在\n", encoding="utf-8")
    return [
        "--train_files",
        str(bios),
        "--tokenizer_name_or_path",
        str(tokenizer),
        "--probe_questions",
        str(questions),
    ]


if __name__ == "__main__":
    if sys.argv[1:2] == ["--zygote"]:
        zygote()
    else:
        main()
