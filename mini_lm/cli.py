"""The ``mini-lm`` command. Each subcommand lives in ``mini_lm/commands/<name>.py`` and defines
``add_arguments(parser)`` and ``run(args) -> int``; heavy imports stay inside ``run`` so
``mini-lm --help`` is instant.

    mini-lm train-tokenizer --files corpus/ --vocab-size 8000 --output tok/

A user error (bad config, data or path) prints one ``error:`` line and exits 2; ``--debug``
(anywhere) or ``MINI_LM_DEBUG=1`` shows its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .errors import call_reporting_user_errors, pop_debug_flag

# subcommand -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "train-tokenizer": ("mini_lm.commands.train_tokenizer", "train a byte-level BPE with ChatML tokens"),
    "synth-world": ("mini_lm.commands.synth_world", "write the synthetic people world (bios, Q/A)"),
    "generate": ("mini_lm.commands.generate", "continue prompts with a trained model"),
    "serve": ("mini_lm.commands.serve", "serve a model: OpenAI-compatible HTTP API and a chat page"),
    "audit-data": ("mini_lm.commands.audit_data", "print the SFT label audit of a recipe config"),
    "export": ("mini_lm.commands.export", "merge a LoRA adapter into a plain HF model (--merge)"),
    "chat": ("mini_lm.commands.chat", "talk to a chat model in the terminal (multi-turn, streamed)"),
    "probe": ("mini_lm.commands.probe", "ask every checkpoint of a run the probe questions"),
    "report": ("mini_lm.commands.report", "Markdown + PNG report of how a run matured"),
    "preference-pairs": ("mini_lm.commands.preference_pairs", "DPO pairs from a model's own wrong answers"),
    "eval": (
        "mini_lm.commands.eval",
        "multiple-choice benchmark (CMMLU, a JSONL) of a model or every checkpoint",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mini-lm", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in COMMANDS.items():
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        importlib.import_module(module).add_arguments(cmd)
        cmd.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = pop_debug_flag(list(sys.argv[1:] if argv is None else argv))  # --debug: tracebacks
    # Commands that set _overrides take any further --key value pairs (recipe config overrides).
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "_overrides", False):
        parser.parse_args(argv)  # argparse's own "unrecognized arguments" error
    args.overrides = extra
    # Commands also check their own arguments with plain ValueError / missing paths: user errors too.
    return call_reporting_user_errors(
        lambda: importlib.import_module(args._module).run(args),
        prog=f"mini-lm {args.command}",
        also=(ValueError, FileNotFoundError, FileExistsError),
    )


if __name__ == "__main__":
    sys.exit(main())
