"""mini-lm synth-world --out data/world --seed 0 --people 200"""

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


def run(args: argparse.Namespace) -> int:
    import yaml

    from ..data.synthetic import write_world

    paths = write_world(
        args.out,
        seed=args.seed,
        n_people=args.people,
        bios_per_person=args.bios_per_person,
        langs=tuple(args.langs),
        heldout_fraction=args.heldout_fraction,
    )
    for name, path in paths.items():
        with open(path, encoding="utf-8") as f:
            count = len(yaml.safe_load(f)["questions"]) if path.suffix == ".yaml" else sum(1 for _ in f)
        print(f"{name:>15}: {count:6d} records -> {path}")
    return 0
