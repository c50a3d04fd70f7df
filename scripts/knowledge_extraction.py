"""Knowledge extraction on the synthetic world: which pretraining data lets SFT answer about held-out people?

    python scripts/knowledge_extraction.py                          # every arm x 2 seeds, quickstart scale
    python scripts/knowledge_extraction.py --arms baseline mixed --seeds 0 1 2
    python scripts/knowledge_extraction.py --eval-only              # re-score the finished runs

The setting of Allen-Zhu & Li, "Physics of Language Models: Part 3.1": every person's facts are
in the pretraining biographies; SFT teaches Q/A about half of the people; the other half
(held out) can only be answered by *extracting* what pretraining stored. The arms differ only in
the pretraining data (``mini-lm synth-world`` flags); model, steps and SFT are the quickstart's
(recipes/configs/quickstart/*.yaml):

- baseline: the original quickstart world: 4 biographies per person and language, permuted
  sentences, the full name in the first sentence and, by a coin toss, in the others;
- augment: knowledge augmentation: the full name in every sentence ("fullname") and more
  biographies ("multi"), still permuted; augment+varied: also more phrasings ("varied-templates");
- mixed: mixed training: the Q/A of the SFT half, as text, among the biographies;
- augment+mixed: both;
- arms named ``<world>-<variant>`` keep a world's pretrained model and change only SFT
  (lower lr, fewer steps, LoRA).

Each (arm, seed) runs synth-world (world seed = seed) -> recipes/pretrain.py -> recipes/sft.py
(training seed 42 + seed), then scores held-out and SFT people, every fact, in both languages:
chat questions after SFT, by greedy generation (the answer contains the fact) and by multiple
choice (mini_lm.scoring: the correct value among 3 other people's, chance 25%; sum of
log-likelihood = lm-eval's acc, per character = acc_norm), and raw completions after
pretraining. Prints a table, writes JSON (--json) and the table into --doc between markers.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's mini_lm, whatever the venv's editable install points at

from mini_lm.generation import GenerationSettings, generate, load_for_generation, render_chat_prompt  # noqa: E402
from mini_lm.scoring import best_choice, score_choices  # noqa: E402

# Knowledge augmentation: the full name in every sentence and 6 biographies per person and language
# (the baseline has 4, already with permuted sentences); "+varied" adds more phrasings, the name
# mid-sentence and line breaks, so that a byte-level BPE sees both forms of an English name.
AUGMENT = ["--fullname", "--bios-per-person", "6"]
WORLDS = {
    "baseline": [],
    "augment": AUGMENT,
    "augment+varied": [*AUGMENT, "--varied-templates"],
    "mixed": ["--mix-qa"],
    "augment+mixed": [*AUGMENT, "--mix-qa"],
}
# arm -> (world, SFT overrides on top of --sft-config). Arms with the same world share its pretraining.
# The quickstart SFT is full-weight, lr 1e-3, 240 steps (~10 epochs of the SFT half's Q/A).
LORA = ["--use_peft", "true", "--learning_rate", "3e-3"]
ARMS = {
    "baseline": ("baseline", []),
    "augment": ("augment", []),
    "augment-lowlr": ("augment", ["--learning_rate", "1e-4"]),
    "augment-short": ("augment", ["--max_steps", "60"]),
    "augment-lora": ("augment", LORA),
    "augment+varied": ("augment+varied", []),
    "augment+varied-lora": ("augment+varied", LORA),
    "mixed": ("mixed", []),
    "augment+mixed": ("augment+mixed", []),
}
START, END = "<!-- results:start -->", "<!-- results:end -->"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS), metavar="ARM")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--people", type=int, default=100)
    p.add_argument("--pretrain-config", default="recipes/configs/quickstart/pretrain.yaml")
    p.add_argument("--sft-config", default="recipes/configs/quickstart/sft.yaml")
    p.add_argument("--pretrain-overrides", default="", help='e.g. "--max_steps 300"')
    p.add_argument("--sft-overrides", default="")
    p.add_argument("--work", default="runs/knowledge_extraction")
    p.add_argument("--json", default="docs/knowledge_extraction.json")
    p.add_argument("--doc", default="docs/knowledge_extraction.md")
    p.add_argument("--eval-only", action="store_true", help="score existing runs, train nothing")
    p.add_argument(
        "--score",
        metavar="RUN_DIR",
        help="only score one run laid out as RUN_DIR/{world,pretrain,sft} (the quickstart's) and print it",
    )
    return p.parse_args(argv)


def run(cmd: list[str], log: Path) -> None:
    """One stage as a subprocess (a fresh process per recipe, as a user runs them), logged to a file."""
    with log.open("w", encoding="utf-8") as f:
        done = subprocess.run(cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT, env={**os.environ})
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd[:3])} failed ({done.returncode}): see {log}")


def sft_dir(arm: str) -> str:
    """The SFT output's folder inside the world's run dir: sft (the config as is) or sft_<variant>."""
    return "sft" if not ARMS[arm][1] else "sft_" + arm.split("-", 1)[1]


def train_arm(arm: str, seed: int, args) -> Path:
    """synth-world -> pretrain -> SFT for one arm; a stage whose output exists is reused (delete to redo)."""
    world_name, sft_overrides = ARMS[arm]
    out = Path(args.work) / f"{world_name}_seed{seed}"
    out.mkdir(parents=True, exist_ok=True)
    py, common = sys.executable, ["--probe", "false", "--report_to", "none", "--seed", str(42 + seed)]
    if not (out / "pretrain/train_results.json").is_file():
        synth = ["--out", str(out / "world"), "--seed", str(seed), "--people", str(args.people)]
        run([py, "-m", "mini_lm.cli", "synth-world", *synth, *WORLDS[world_name]], out / "synth.log")
        data = ["--train_files", str(out / "world/pretrain.jsonl"), "--output_dir", str(out / "pretrain")]
        run(
            [py, "recipes/pretrain.py", "--config", args.pretrain_config, *data, *common]
            + shlex.split(args.pretrain_overrides),
            out / "pretrain.log",
        )
    sft = out / sft_dir(arm)
    if not (sft / "train_results.json").is_file():
        data = [
            "--model_name_or_path",
            str(out / "pretrain"),
            "--train_files",
            str(out / "world/qa_sft.jsonl"),
        ]
        run(
            [py, "recipes/sft.py", "--config", args.sft_config, *data, "--output_dir", str(sft), *common]
            + ["--disable_tqdm", "true", *sft_overrides, *shlex.split(args.sft_overrides)],
            out / f"{sft.name}.log",
        )
    return out


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.open(encoding="utf-8")]


def generation_scores(model, tokenizer, prompts: list[str], expected: list[str], max_new_tokens: int):
    """Greedy answers and whether each contains the expected fact."""
    settings = GenerationSettings(do_sample=False, max_new_tokens=max_new_tokens)
    results = generate(model, tokenizer, prompts, settings, batch_size=64)
    return [r.text for r in results], [e in r.text for e, r in zip(expected, results)]


def choice_accuracy(model, tokenizer, prompts: list[str], questions: list[dict]) -> dict[str, float]:
    """Multiple-choice accuracy under lm-eval's acc (sum) and acc_norm (per character)."""
    scores = score_choices(model, tokenizer, prompts, [q["choices"] for q in questions], batch_size=64)
    out = {}
    for norm in ("sum", "char"):
        right = [q["choices"][best_choice(s, norm)] == q["answer"] for q, s in zip(questions, scores)]
        out[norm] = sum(right) / len(right)
    return out


def questions(world: Path, stage: str, split: str, tokenizer) -> tuple[list[dict], list[dict]]:
    """(generation items, multiple-choice items) of one split, each with its rendered prompt.

    After SFT: chat questions, the first phrasing of every fact (qa_*.jsonl holds two); after
    pretraining: raw completions ("王伟出生在"). Both cover every person, fact and language.
    """
    mc = [q for q in read_jsonl(world / "mc_questions.jsonl") if q["group"] == split]
    if stage == "sft":
        chat = lambda text: render_chat_prompt(tokenizer, [{"role": "user", "content": text}])  # noqa: E731
        qa = read_jsonl(world / f"qa_{split}.jsonl")[::2]
        items = [
            {**r, "text": r["messages"][0]["content"], "rendered": chat(r["messages"][0]["content"])}
            for r in qa
        ]
        return items, [{**q, "rendered": chat(q["question"])} for q in mc if "question" in q]
    raw = [r for r in read_jsonl(world / "completions.jsonl") if r["split"] == split]
    items = [{**r, "text": r["prompt"], "rendered": r["prompt"]} for r in raw]
    return items, [{**q, "rendered": q["prompt"]} for q in mc if "prompt" in q]


def evaluate(run_dir: Path, sft: str = "sft", examples: int = 0) -> dict:
    """Per stage and split: generation accuracy (overall and per attribute), multiple-choice accuracy."""
    result = {}
    for stage in ("sft", "pretrain"):
        model, tokenizer = load_for_generation(str(run_dir / (sft if stage == "sft" else stage)))
        for split in ("heldout", "sft"):
            items, mc = questions(run_dir / "world", stage, split, tokenizer)
            texts, hits = generation_scores(
                model,
                tokenizer,
                [i["rendered"] for i in items],
                [i["expected"] for i in items],
                40 if stage == "sft" else 24,
            )
            by_attr = {}
            for item, hit in zip(items, hits):
                by_attr.setdefault(item["attribute"], []).append(hit)
            result[f"{stage}/{split}"] = {
                "n": len(items),
                "generation": sum(hits) / len(hits),
                "generation_by_attribute": {a: sum(h) / len(h) for a, h in by_attr.items()},
                "mc": choice_accuracy(model, tokenizer, [q["rendered"] for q in mc], mc),
                "mc_n": len(mc),
                "mc_chance": sum(1 / len(q["choices"]) for q in mc) / len(mc),
                "examples": [[i["text"], t, h] for i, t, h in list(zip(items, texts, hits))[:examples]],
            }
    result["seconds"] = {
        stage: _train_seconds(run_dir / d) for stage, d in (("pretrain", "pretrain"), ("sft", sft))
    }
    return result


def _train_seconds(stage_dir: Path) -> dict:
    metrics = json.loads((stage_dir / "train_results.json").read_text())
    steps = json.loads((stage_dir / "trainer_state.json").read_text())["global_step"]
    return {"train_runtime": metrics["train_runtime"], "steps": steps}


COLUMNS = (  # (header, result key, metric)
    ("held-out chat: generation", "sft/heldout", "generation"),
    ("held-out chat: MC acc_norm", "sft/heldout", "char"),
    ("held-out chat: MC acc", "sft/heldout", "sum"),
    ("SFT people chat: generation", "sft/sft", "generation"),
    ("SFT people chat: MC acc_norm", "sft/sft", "char"),
    ("held-out raw after pretraining: generation", "pretrain/heldout", "generation"),
    ("held-out raw after pretraining: MC acc_norm", "pretrain/heldout", "char"),
)


def _metric(r: dict, key: str, metric: str) -> float:
    return r[key]["generation"] if metric == "generation" else r[key]["mc"][metric]


def table(results: dict) -> str:
    """One row per (arm, seed) and a mean row per arm with several seeds; MC chance at the bottom."""
    header = ["arm", "seed", *(c[0] for c in COLUMNS), "pretrain s/step", "SFT s/step"]
    rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for arm in ARMS:
        runs = sorted((r for r in results.values() if r["arm"] == arm), key=lambda r: r["seed"])
        for r in runs:
            cells = [f"{100 * _metric(r, k, m):.0f}%" for _, k, m in COLUMNS]
            pace = [
                f"{r['seconds'][st]['train_runtime'] / r['seconds'][st]['steps']:.2f}"
                for st in ("pretrain", "sft")
            ]
            rows.append(f"| {arm} | {r['seed']} | " + " | ".join(cells + pace) + " |")
        if len(runs) > 1:
            means = [sum(_metric(r, k, m) for r in runs) / len(runs) for _, k, m in COLUMNS]
            rows.append(
                f"| **{arm}** | mean | " + " | ".join(f"**{100 * x:.0f}%**" for x in means) + " | | |"
            )
    first = next(iter(results.values()))["sft/heldout"]
    return "\n".join(rows) + (
        f"\n\nMultiple-choice chance: {100 * first['mc_chance']:.0f}%; {first['n']} questions per split "
        "(every fact of 50 people, zh + en). s/step: wall time under whatever else ran on the machine."
    )


def print_scores(result: dict) -> None:
    """A few answers and the accuracy lines of one run (what the quickstart prints)."""
    for stage, what in (
        ("pretrain", "raw completions after pretraining"),
        ("sft", "chat questions after SFT"),
    ):
        for split in ("sft", "heldout"):
            r = result[f"{stage}/{split}"]
            for question, answer, hit in r["examples"]:
                print(f"  [{split}] {question} -> {answer!r} {'(right)' if hit else '(wrong)'}")
            print(
                f"  [{split}] {what}: {round(r['generation'] * r['n'])}/{r['n']} answers contain the right "
                f"fact ({r['generation']:.0%}); multiple choice {r['mc']['char']:.0%} "
                f"(acc_norm; acc {r['mc']['sum']:.0%}; chance {r['mc_chance']:.0%}, n={r['mc_n']})"
            )


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.score:
        print_scores(evaluate(Path(args.score), examples=2))
        return
    path = Path(args.json)
    results = json.loads(path.read_text()) if path.is_file() else {}
    for seed in args.seeds:
        for arm in args.arms:
            began = time.time()
            run_dir = Path(args.work) / f"{ARMS[arm][0]}_seed{seed}"
            if not args.eval_only:
                train_arm(arm, seed, args)
            key = f"{arm} seed{seed}"
            flags = {"world": WORLDS[ARMS[arm][0]], "sft": ARMS[arm][1]}
            results[key] = {"arm": arm, "seed": seed, **flags, **evaluate(run_dir, sft_dir(arm))}
            print(f"{key}: done in {time.time() - began:.0f}s", flush=True)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(
                json.dumps(results, indent=1, ensure_ascii=False) + "\n"
            )  # nothing lost to a crash
    text = table(results)
    print(text)
    doc = Path(args.doc)
    if doc.is_file() and START in doc.read_text():
        before, rest = doc.read_text().split(START, 1)
        doc.write_text(f"{before}{START}\n{text}\n{END}{rest.split(END, 1)[1]}")


if __name__ == "__main__":
    main()
