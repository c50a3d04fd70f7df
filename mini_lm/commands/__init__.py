"""Subcommands of ``mini-lm`` (see mini_lm/cli.py)."""
