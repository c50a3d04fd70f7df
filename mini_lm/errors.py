"""Errors a user can fix, and how they end a process.

Every such error subclasses ``UserError``: a config that cannot be used, bad data, a missing
path, a resume that cannot work, a rerun into an output_dir that holds a run. Its message is
meant for the user: it names the file, line/record and field, and the fix. An entry point turns
one into a single line on stderr and exit code 2 (no traceback; ``MINI_LM_DEBUG=1`` or a bare
``--debug`` shows it). Anything else is a bug and keeps its traceback.

    if __name__ == "__main__":            # recipes/*.py
        sys.exit(run_main(main))
    return call_reporting_user_errors(lambda: module.run(args), prog="mini-lm generate")  # cli.py

Under torchrun / accelerate every rank runs the same checks on the same input, so every rank
fails the same way: one line each.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable

DEBUG_ENV = "MINI_LM_DEBUG"
DEBUG_FLAG = "--debug"


class UserError(Exception):
    """An error the user causes and can fix; ``exit_code`` is what the process ends with."""

    exit_code = 2


class ConfigError(UserError, ValueError):
    """A recipe configuration that cannot be used as written."""


def debug_enabled() -> bool:
    return os.environ.get(DEBUG_ENV, "").lower() not in ("", "0", "false", "no")


def pop_debug_flag(argv: list[str]) -> list[str]:
    """Drop a bare ``--debug`` from ``argv`` and turn debugging on (sets ``MINI_LM_DEBUG=1``).

    Bare means followed by nothing or by another ``--flag``: HF's own ``--debug`` option always
    takes a value (``--debug underflow_overflow``), which is left alone.

    >>> pop_debug_flag(["--config", "a.yaml", "--debug"])
    ['--config', 'a.yaml']
    """
    kept = []
    for i, arg in enumerate(argv):
        following = argv[i + 1] if i + 1 < len(argv) else None
        if arg == DEBUG_FLAG and (following is None or following.startswith("--")):
            os.environ[DEBUG_ENV] = "1"
            continue
        kept.append(arg)
    return kept


def one_line(err: BaseException) -> str:
    """The message on one line (YAML and JSON errors carry newlines)."""
    return re.sub(r"\s*\n\s*", " ", str(err).strip()) or type(err).__name__


def write_line(line: str) -> None:
    """``line`` and its newline on stderr in one write: ranks of one job share the stream, and
    ``print`` writes the text and the newline separately when stderr is unbuffered
    (``PYTHONUNBUFFERED=1``), so two ranks' lines could run together on one line."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def call_reporting_user_errors(
    fn: Callable[[], int | None], prog: str = "", also: tuple[type[BaseException], ...] = ()
) -> int:
    """``fn()``'s exit code (None: 0); a ``UserError`` (or one of ``also``) is printed as
    ``[prog: ]error: <message>`` on stderr instead, returning its exit code (2 unless it says)."""
    try:
        return fn() or 0
    except (UserError, *also) as err:
        if debug_enabled():
            raise
        prefix = f"{prog}: " if prog else ""
        write_line(f"{prefix}error: {one_line(err)}")
        _leave_process_group()
        return getattr(err, "exit_code", 2)


def run_main(main: Callable[[list[str]], object], argv: list[str] | None = None) -> int:
    """A recipe's ``main(argv)`` as a process: 0 when it returns, a user error as one line."""
    args = pop_debug_flag(list(sys.argv[1:] if argv is None else argv))

    def call() -> int:
        main(args)
        return 0

    return call_reporting_user_errors(call)


def _leave_process_group() -> None:
    """Leave no process group behind: a rank exiting with one alive can abort noisily at shutdown."""
    dist = sys.modules.get("torch.distributed")
    try:
        if dist is not None and dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    except Exception:  # best effort: the error line is already out
        pass
