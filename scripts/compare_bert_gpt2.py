"""GPT-2 vs the BERT adapter (lr 1e-5 and 1e-3), seed 001's experiment at CPU scale, one command:

    python scripts/compare_bert_gpt2.py                 # 2 CPU cores: 4.5 min of CPU time
    python scripts/compare_bert_gpt2.py --hidden 768 --layers 12 --heads 12 --batch 64 --rounds 20 \
        --steps-per-round 782    # seed scale: GPU

Same corpus (红楼梦 minus its last chapters, held out), same model size, same batch (32 rows),
same step budget, same bert-base-chinese vocabulary. Each model trains with its own scheme through
its own recipe: BERT on 13-token windows (12 of context, 1 target: recipes/mlm.py, max_len 15),
GPT-2 on 32-token blocks (every token a target: recipes/pretrain.py). After every round of steps
(the seed's "轮") both are scored the same way, through the shared next-token interface:
held-out loss of a character given the 12 before it, and greedy continuations of 13-character
prompts. Results go between the markers of docs/bert_vs_gpt2.md and into a JSON file.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import torch

from mini_lm.generation import GenerationSettings, generate, load_for_generation
from mini_lm.tokenization import bert_tokenizer

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MINI_LM_DATA", REPO.parent / "shared" / "data"))
CONTEXT = 12  # seed 001: max_len 15 = [CLS] + 12 + [MASK] + [SEP]
START, END = "<!-- results:start -->", "<!-- results:end -->"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--steps-per-round", type=int, default=150)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--gpt2-lr", type=float, default=1e-3)
    p.add_argument("--bert-lrs", type=float, nargs="+", default=[1e-5, 1e-3])
    p.add_argument(
        "--heldout-chars", type=int, default=20000, help="the novel's last N characters are held out"
    )
    p.add_argument("--work", default="runs/compare_bert_gpt2")
    p.add_argument("--doc", default="docs/bert_vs_gpt2.md")
    p.add_argument("--json", default="docs/bert_vs_gpt2.json")
    return p.parse_args(argv)


def prepare(args) -> tuple[Path, Path, Path, list[str]]:
    """Train/held-out text files, the tokenizer dir both recipes use, and 13-character prompts."""
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    text = (DATA / "corpus/zh/hongloumeng.txt").read_text(encoding="utf-8").replace("\r\n", "\n")
    cut = text.index("\n", len(text) - args.heldout_chars) + 1  # held out from a line start
    train, heldout = text[:cut], text[cut:]
    (work / "train.txt").write_text(train, encoding="utf-8")
    (work / "heldout.txt").write_text(heldout, encoding="utf-8")
    bert_tokenizer(DATA / "tokenizers/bert-base-chinese").save_pretrained(work / "tokenizer")
    starts = [line.strip() for line in heldout.splitlines() if len(line.strip()) > 40][:2]
    return work / "train.txt", work / "heldout.txt", work / "tokenizer", [s[:13] for s in starts]


def train(name: str, recipe: str, extra: list[str], args, files) -> Path:
    train_file, heldout_file, tokenizer, _ = files
    out = Path(args.work) / name
    steps = args.rounds * args.steps_per_round
    argv = [
        sys.executable,
        str(REPO / recipe),
        "--hidden_size",
        str(args.hidden),
        "--num_hidden_layers",
        str(args.layers),
        "--num_attention_heads",
        str(args.heads),
        "--tokenizer_name_or_path",
        str(tokenizer),
        "--train_files",
        str(train_file),
        "--validation_files",
        str(heldout_file),
        "--text_sample_by",
        "line",
        "--per_device_train_batch_size",
        str(args.batch),
        "--per_device_eval_batch_size",
        "128",
        "--max_steps",
        str(steps),
        "--lr_scheduler_type",
        "constant",
        "--logging_steps",
        str(args.steps_per_round),
        "--eval_strategy",
        "steps",
        "--eval_steps",
        str(args.steps_per_round),
        "--save_strategy",
        "steps",
        "--save_steps",
        str(args.steps_per_round),
        "--save_only_model",
        "true",
        "--report_to",
        "none",
        "--disable_tqdm",
        "true",
        "--output_dir",
        str(out),
        "--overwrite_output_dir",
        "true",
        "--seed",
        "42",
        *extra,
    ]
    print(f"== {name}: {' '.join(argv[1:3])} ... ({steps} steps)", flush=True)
    with open(Path(args.work) / f"{name}.log", "w", encoding="utf-8") as log:
        subprocess.run(argv, check=True, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    return out


def heldout_windows(tokenizer, heldout_file: Path, n: int = 1024) -> torch.Tensor:
    """Non-overlapping 13-token windows of the held-out text: (N, 13)."""
    ids = tokenizer(heldout_file.read_text(encoding="utf-8"), add_special_tokens=False)["input_ids"]
    windows = [ids[i : i + CONTEXT + 1] for i in range(0, len(ids) - CONTEXT - 1, CONTEXT + 1)][:n]
    return torch.tensor(windows)


@torch.no_grad()
def next_token_loss(model, windows: torch.Tensor) -> float:
    """Loss of each window's last token given the 12 before it, from logits[:, -1] (any family)."""
    logits = torch.cat([model(input_ids=chunk[:, :-1]).logits[:, -1] for chunk in windows.split(256)])
    return torch.nn.functional.cross_entropy(logits.float(), windows[:, -1]).item()


def score(run: Path, files, windows: torch.Tensor) -> list[dict]:
    """Per round: train loss (the recipe's log), own eval loss, shared held-out loss, greedy samples."""
    history = json.loads((run / "trainer_state.json").read_text())["log_history"]
    rows = []
    for ckpt in sorted(run.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1])):
        step = int(ckpt.name.split("-")[1])
        model, tok = load_for_generation(str(ckpt))
        samples = generate(model, tok, files[3], GenerationSettings(do_sample=False, max_new_tokens=20))
        rows.append(
            {
                "step": step,
                "train_loss": next(h["loss"] for h in history if h.get("step") == step and "loss" in h),
                "eval_loss": next(
                    h["eval_loss"] for h in history if h.get("step") == step and "eval_loss" in h
                ),
                "heldout_next_token_loss": next_token_loss(model, windows),
                "samples": [s.prompt + s.text for s in samples],
            }
        )
    return rows


def render(args, results: dict[str, list[dict]]) -> str:
    names = list(results)
    lines = [
        f"Command: `python scripts/compare_bert_gpt2.py` ({args.rounds} rounds x {args.steps_per_round} steps, "
        f"batch {args.batch}, {args.hidden} wide x {args.layers} layers, lr constant, no warmup).",
        "",
        "Held-out loss = loss of a character given the 12 before it, the same measure for every model "
        "(train loss: each recipe's own average over the round).",
        "",
        "| round (steps) | " + " | ".join(f"{n} train / held-out" for n in names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for i, row in enumerate(results[names[0]]):
        cells = [
            f"{results[n][i]['train_loss']:.3f} / {results[n][i]['heldout_next_token_loss']:.3f}"
            for n in names
        ]
        lines.append(f"| {i + 1} ({row['step']}) | " + " | ".join(cells) + " |")
    lines += ["", "Greedy continuations (20 new tokens) after the first and the last round:", ""]
    for n in names:
        lines.append(f"**{n}**")
        lines.append("```")
        for i in sorted({0, len(results[n]) - 1}):
            lines += [f"round {i + 1}: {s}" for s in results[n][i]["samples"]]
        lines.append("```")
    return "\n".join(lines)


def write_doc(path: Path, block: str) -> None:
    doc = (
        path.read_text(encoding="utf-8")
        if path.exists()
        else f"# GPT-2 vs the BERT adapter\n\n{START}\n{END}\n"
    )
    if START not in doc or END not in doc:
        raise ValueError(f"{path}: needs the markers {START} and {END} around the results")
    path.write_text(
        re.sub(f"{START}.*{END}", lambda _: f"{START}\n{block}\n{END}", doc, flags=re.S), encoding="utf-8"
    )


def main(argv=None) -> dict:
    args = parse_args(argv)
    files = prepare(args)
    runs = {
        f"GPT-2 lr {args.gpt2_lr:g}": train(
            "gpt2",
            "recipes/pretrain.py",
            [
                "--model_family",
                "gpt2",
                "--block_size",
                "32",
                "--max_position_embeddings",
                "64",
                "--learning_rate",
                str(args.gpt2_lr),
            ],
            args,
            files,
        )
    }
    for lr in args.bert_lrs:
        runs[f"BERT lr {lr:g}"] = train(
            f"bert_lr{lr:g}",
            "recipes/mlm.py",
            [
                "--model_family",
                "bert",
                "--max_len",
                str(CONTEXT + 3),
                "--max_position_embeddings",
                str(CONTEXT + 3),
                "--learning_rate",
                str(lr),
            ],
            args,
            files,
        )
    windows = heldout_windows(bert_tokenizer(files[2]), files[1])
    results = {name: score(run, files, windows) for name, run in runs.items()}
    block = render(args, results)
    print(block)
    write_doc(Path(args.doc), block)
    Path(args.json).write_text(
        json.dumps({"args": vars(args), "results": results}, ensure_ascii=False, indent=2) + "\n",
        encoding="utf-8",
    )
    print(f"wrote {args.doc} and {args.json}")
    return results


if __name__ == "__main__":
    main()
