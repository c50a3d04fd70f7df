"""mini-lm preference-pairs MODEL_DIR --qa QA.jsonl --out PAIRS.jsonl: DPO pairs from a model's own answers.

Asks the model every question of a Q/A file (greedy and sampled), and pairs each wrong or repetitive
answer (rejected) with the file's reference answer (chosen), in TRL's prompt / chosen / rejected
format for recipes/dpo.py. The quickstart's third stage builds its preference set this way:

    mini-lm preference-pairs runs/quickstart/sft --qa runs/quickstart/world/qa_heldout.jsonl \\
        --exclude-probed runs/quickstart/world/probe_questions.yaml --out runs/quickstart/preference.jsonl
"""

from __future__ import annotations

import argparse

# Flag -> PairSettings field; unset flags keep PairSettings' defaults (mini_lm/preference_pairs.py).
SETTINGS = {
    "samples": (int, "sampled answers per question, besides the greedy one (default 2)"),
    "temperature": (float, "sampling temperature (default 1.0)"),
    "top_k": (int, "sampling top-k, 0 = off (default 0)"),
    "max_new_tokens": (int, "tokens per answer (default 40)"),
    "per_question": (int, "distinct rejected answers kept per question (default 1)"),
    "batch_size": (int, "prompts generated together (default 64)"),
    "seed": (int, "seed of the first sampled answer (default 0)"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model_dir", help="a chat model dir (an SFT run's output_dir)")
    parser.add_argument("--qa", required=True, help="JSONL of {messages: [..., user, assistant], expected}")
    parser.add_argument("--out", required=True, help="where the pairs go (JSONL)")
    parser.add_argument("--limit", type=int, default=None, help="ask only the first N questions")
    parser.add_argument(
        "--exclude-probed",
        metavar="PROBE_QUESTIONS",
        help="leave out the people (person_id) this probe questions file asks about, so the probes "
        "keep measuring people the pairs never mention",
    )
    for name, (kind, help_text) in SETTINGS.items():
        parser.add_argument("--" + name.replace("_", "-"), dest=name, type=kind, default=None, help=help_text)


def run(args: argparse.Namespace) -> int:
    from ..generation import load_for_generation
    from ..preference_pairs import (
        PairSettings,
        exclude_probed,
        format_stats,
        read_qa,
        self_pairs,
        write_pairs,
    )

    settings = PairSettings(**{k: getattr(args, k) for k in SETTINGS if getattr(args, k) is not None})
    qa = read_qa(args.qa, args.limit)
    if args.exclude_probed:
        qa, people = exclude_probed(qa, args.exclude_probed)
        print(
            f"left out the {len(people)} people the probes ask about ({args.exclude_probed}): {len(qa)} questions"
        )
    model, tokenizer = load_for_generation(args.model_dir)
    pairs, stats = self_pairs(model, tokenizer, qa, settings)
    print(format_stats(stats))
    if not pairs:
        raise ValueError(f"{args.model_dir} answered every question well: no preference pair to write")
    print(f"pairs -> {write_pairs(pairs, args.out)}")
    return 0
