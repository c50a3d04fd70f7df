"""JSON records from files: ``.jsonl`` (one object a line) or ``.json`` (a list of objects, or one).

    for where, record in read_records("sft.jsonl"):         # where = "sft.jsonl:3", for error messages
        ...
    read_records("probes.jsonl", skip_bad_lines=True)         # a line torn by a crash is skipped, counted

Every reader of record files (SFT data, probe questions and results, prompt files) goes through
``read_records``, so a bad line is reported the same way everywhere: file, line, what is wrong.
Bytes are decoded by ``mini_lm.text_files`` (UTF-8 with or without BOM, GB18030 / UTF-16 detected,
or ``encoding``), as corpora are.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from .errors import UserError
from .text_files import iter_lines, read_text

logger = logging.getLogger(__name__)


class RecordError(UserError, ValueError):
    """A record file that cannot be read as JSON; the message names the file and line."""


def read_records(
    path: str | os.PathLike, skip_bad_lines: bool = False, encoding: str | None = None
) -> Iterator[tuple[str, object]]:
    """Yield (where, record): "file:line" for JSONL, "file record N" for a JSON list.

    A JSONL line that is not JSON raises ``RecordError`` ("a.jsonl:3: not valid JSON (...)"), or with
    ``skip_bad_lines`` is skipped and counted in a warning (what a crash mid-append leaves behind).
    """
    path = Path(path)
    if path.suffix == ".jsonl":
        yield from _jsonl(path, skip_bad_lines, encoding)
        return
    text = read_text(path, encoding)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise RecordError(f"{path}:{err.lineno}: not valid JSON ({err.msg} at column {err.colno})") from err
    if isinstance(data, dict):  # a single record
        data = [data]
    if not isinstance(data, list):
        raise RecordError(f"{path}: a .json file must hold a list of records, got {type(data).__name__}")
    for i, record in enumerate(data, 1):
        yield f"{path} record {i}", record


def _jsonl(path: Path, skip_bad_lines: bool, encoding: str | None) -> Iterator[tuple[str, object]]:
    bad = []
    for line_no, line in enumerate(iter_lines(path, encoding, skip_undecodable=skip_bad_lines), 1):
        if line is None:  # torn mid-character
            bad.append(line_no)
            continue
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            if not skip_bad_lines:
                raise RecordError(
                    f"{path}:{line_no}: not valid JSON ({err.msg} at column {err.colno})"
                ) from err
            bad.append(line_no)
            continue
        yield f"{path}:{line_no}", record
    if bad:
        logger.warning("%s: skipped %d unreadable line(s) %s (a write cut short?)", path, len(bad), bad[:5])
