"""mini-lm synth-world --out data/world --seed 0 --people 200 [--fullname] [--mix-qa]"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--people", type=int, default=200)
    parser.add_argument("--bios-per-person", type=int, default=4, help="per person and language")
    parser.add_argument("--langs", nargs="+", default=["zh", "en"], choices=["zh", "en"])
    parser.add_argument(
        "--heldout-fraction", type=float, default=0.5, help="people whose Q/A is kept out of SFT"
    )
    parser.add_argument(
        "--fullname",
        action="store_true",
        help="knowledge augmentation: the full name in every biography sentence (default: only the "
        "first; the others use a pronoun half of the time)",
    )
    parser.add_argument(
        "--varied-templates",
        action="store_true",
        help="knowledge augmentation: more phrasings per fact, some with the name mid-sentence",
    )
    parser.add_argument(
        "--mix-qa",
        action="store_true",
        help="mixed training: pretrain.jsonl also holds the Q/A of the sft half as text",
    )
    parser.add_argument("--choices", type=int, default=4, help="options per multiple-choice question")


def run(args: argparse.Namespace) -> int:
    import yaml

    from ..data.synthetic import write_world

    if args.bios_per_person < 1:
        raise ValueError(f"--bios-per-person must be >= 1, got {args.bios_per_person}")
    paths = write_world(
        args.out,
        seed=args.seed,
        n_people=args.people,
        bios_per_person=args.bios_per_person,
        langs=tuple(args.langs),
        heldout_fraction=args.heldout_fraction,
        fullname=args.fullname,
        varied_templates=args.varied_templates,
        mix_qa=args.mix_qa,
        n_choices=args.choices,
    )
    for name, path in paths.items():
        with open(path, encoding="utf-8") as f:
            if path.suffix == ".yaml":
                data = yaml.safe_load(f)
                count = f"{len(data['questions'])} + {len(data.get('multiple_choice', []))} multiple-choice"
            else:
                count = str(sum(1 for _ in f))
        print(f"{name:>15}: {count:>6} records -> {path}")
    return 0
