"""Knowledge extraction on the synthetic world: which pretraining data lets SFT answer about held-out people?

    python scripts/knowledge_extraction.py                          # 4 arms x 2 seeds, quickstart scale
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
  biographies ("multi"), still permuted;
- mixed: mixed training: the Q/A of the SFT half, as text, among the biographies;
- augment+mixed: both.

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

AUGMENT = ["--fullname", "--bios-per-person", "6"]
ARMS = {
    "baseline": [],
    "augment": AUGMENT,
    "mixed": ["--mix-qa"],
    "augment+mixed": [*AUGMENT, "--mix-qa"],
}
START, END = "<!-- results:start -->", "<!-- results:end -->"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
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


def train_arm(arm: str, seed: int, args) -> Path:
    out = Path(args.work) / f"{arm}_seed{seed}"
    out.mkdir(parents=True, exist_ok=True)
    py, common = sys.executable, ["--probe", "false", "--report_to", "none", "--seed", str(42 + seed)]
    synth = ["--out", str(out / "world"), "--seed", str(seed), "--people", str(args.people)]
    run([py, "-m", "mini_lm.cli", "synth-world", *synth, *ARMS[arm]], out / "synth.log")
    pretrain = ["--train_files", str(out / "world/pretrain.jsonl"), "--output_dir", str(out / "pretrain")]
    run(
        [py, "recipes/pretrain.py", "--config", args.pretrain_config, *pretrain, *common]
        + shlex.split(args.pretrain_overrides),
        out / "pretrain.log",
    )
    sft = ["--model_name_or_path", str(out / "pretrain"), "--train_files", str(out / "world/qa_sft.jsonl")]
    run(
        [py, "recipes/sft.py", "--config", args.sft_config, *sft, "--output_dir", str(out / "sft"), *common]
        + ["--disable_tqdm", "true", *shlex.split(args.sft_overrides)],
        out / "sft.log",
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


def evaluate(run_dir: Path, examples: int = 0) -> dict:
    """Per stage and split: generation accuracy (overall and per attribute), multiple-choice accuracy."""
    result = {}
    for stage in ("sft", "pretrain"):
        model, tokenizer = load_for_generation(str(run_dir / stage))
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
    result["seconds"] = {stage: _train_seconds(run_dir / stage) for stage in ("pretrain", "sft")}
    return result


def _train_seconds(stage_dir: Path) -> dict:
    metrics = json.loads((stage_dir / "train_results.json").read_text())
    steps = json.loads((stage_dir / "trainer_state.json").read_text())["global_step"]
    return {"train_runtime": metrics["train_runtime"], "steps": steps}


def table(results: dict) -> str:
    pct = lambda x: f"{100 * x:.0f}%"  # noqa: E731
    rows = [
        "| arm | seed | held-out chat: generation | held-out chat: MC acc / acc_norm | SFT people chat: "
        "generation | SFT people chat: MC acc / acc_norm | held-out raw after pretraining: generation / MC "
        "acc_norm | pretrain s/step |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, r in results.items():
        arm, seed = key.rsplit("_seed", 1)
        h, s, raw = r["sft/heldout"], r["sft/sft"], r["pretrain/heldout"]
        t = r["seconds"]["pretrain"]
        rows.append(
            f"| {arm} | {seed} | {pct(h['generation'])} | {pct(h['mc']['sum'])} / {pct(h['mc']['char'])} | "
            f"{pct(s['generation'])} | {pct(s['mc']['sum'])} / {pct(s['mc']['char'])} | "
            f"{pct(raw['generation'])} / {pct(raw['mc']['char'])} | {t['train_runtime'] / t['steps']:.2f} |"
        )
    chance = next(iter(results.values()))["sft/heldout"]["mc_chance"]
    n = next(iter(results.values()))["sft/heldout"]["n"]
    return "\n".join(rows) + f"\n\nMultiple-choice chance: {pct(chance)}; {n} questions per split and mode."


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
            run_dir = Path(args.work) / f"{arm}_seed{seed}"
            began = time.time()
            if not args.eval_only:
                train_arm(arm, seed, args)
            results[run_dir.name] = {"arm": arm, "seed": seed, "flags": ARMS[arm], **evaluate(run_dir)}
            print(f"{run_dir.name}: done in {time.time() - began:.0f}s", flush=True)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(results, indent=1) + "\n")  # after each run: nothing lost to a crash
    text = table(
        {
            k: results[k]
            for k in sorted(results, key=lambda k: (list(ARMS).index(results[k]["arm"]), results[k]["seed"]))
        }
    )
    print(text)
    doc = Path(args.doc)
    if doc.is_file() and START in doc.read_text():
        before, rest = doc.read_text().split(START, 1)
        doc.write_text(f"{before}{START}\n{text}\n{END}{rest.split(END, 1)[1]}")


if __name__ == "__main__":
    main()
