"""Load a text corpus from files, folders, globs or hub dataset names into one ``text`` column.

    load_corpus(["../shared/data/corpus/zh", "extra/*.jsonl", "wikitext"])
    -> Dataset({features: ['text'], num_rows: ...})

Files are read by the ``datasets`` builders (text / json / parquet). ``.txt`` files split into
documents by line, blank-line paragraph, or whole file. Documents shorter than ``min_chars``
are skipped and counted; an empty result is an error, never a silent run on nothing.
"""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import datasets
from datasets import Dataset, IterableDataset

from ..errors import UserError
from ..tokenization import looks_like_hub_id

logger = logging.getLogger(__name__)

BUILDERS = {".txt": "text", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}
SAMPLE_BY = ("line", "paragraph", "document")


class CorpusError(UserError, ValueError):
    """A corpus path or file that cannot be used."""


def resolve_corpus_specs(specs: Sequence[str]) -> tuple[dict[str, list[str]], list[str]]:
    """Split specs into local files grouped by builder, and hub dataset names.

    ``["a.txt", "dir/", "x/*.jsonl", "user/dataset"]`` -> ({"text": [...], "json": [...]}, ["user/dataset"])
    """
    if isinstance(specs, (str, os.PathLike)):
        specs = [specs]
    if not specs:
        raise CorpusError("no corpus given: set train_files (files, folders, globs or hub dataset names)")
    files: dict[str, list[str]] = {}
    hub: list[str] = []
    for spec in specs:
        spec = os.path.expanduser(str(spec))
        if glob.has_magic(spec):
            matches = sorted(p for p in glob.glob(spec, recursive=True) if os.path.isfile(p))
            if not matches:
                raise CorpusError(f"corpus glob matches no files: {spec}")
            found = [_check_suffix(p) for p in matches]
        elif os.path.isdir(spec):
            found = sorted(
                str(p)
                for p in Path(spec).rglob("*")
                if p.is_file() and p.suffix in BUILDERS and not p.name.startswith(".")
            )
            if not found:
                raise CorpusError(f"corpus folder {spec} has no {'/'.join(BUILDERS)} files")
        elif os.path.isfile(spec):
            found = [_check_suffix(spec)]
        elif looks_like_hub_id(spec) and Path(spec).suffix not in BUILDERS:
            hub.append(spec)
            continue
        else:
            raise CorpusError(f"corpus path not found: {spec}")
        for path in found:
            files.setdefault(BUILDERS[Path(path).suffix], []).append(path)
    return files, hub


def _check_suffix(path: str) -> str:
    if Path(path).suffix not in BUILDERS:
        raise CorpusError(f"{path}: unsupported corpus file type (use {', '.join(BUILDERS)})")
    return path


def load_corpus(
    specs: Sequence[str],
    text_field: str = "text",
    sample_by: str = "line",
    streaming: bool = False,
    hub_split: str = "train",
    min_chars: int = 1,
) -> Dataset | IterableDataset:
    """One ``text`` column from every spec, concatenated in order; short documents skipped."""
    if sample_by not in SAMPLE_BY:
        raise CorpusError(f"text_sample_by must be one of {', '.join(SAMPLE_BY)}, got '{sample_by}'")
    files, hub = resolve_corpus_specs(specs)
    parts = []
    for builder, paths in files.items():
        field = "text" if builder == "text" else text_field
        kwargs = {"sample_by": sample_by} if builder == "text" else {}
        try:
            ds = datasets.load_dataset(
                builder, data_files=paths, split="train", streaming=streaming, **kwargs
            )
            parts.append(_text_column(ds, field, paths))
        except Exception:
            if len(paths) == 1:
                parts.append(_load_one(builder, paths[0], field, streaming, kwargs))
            else:  # files with different extra columns cannot be read as one table: one at a time
                parts.extend(_load_one(builder, path, field, streaming, kwargs) for path in paths)
    for name in hub:
        try:
            ds = datasets.load_dataset(name, split=hub_split, streaming=streaming)
        except Exception as err:
            raise CorpusError(
                f"'{name}' is not a local path and could not be loaded from the hub: {err}"
            ) from err
        parts.append(_text_column(ds, text_field, [name]))
    corpus = datasets.concatenate_datasets(parts) if len(parts) > 1 else parts[0]
    return _drop_short(corpus, min_chars, specs)


def _load_one(builder: str, path: str, field: str, streaming: bool, kwargs: dict):
    try:
        ds = datasets.load_dataset(builder, data_files=[path], split="train", streaming=streaming, **kwargs)
    except Exception as err:  # datasets raises many types; say which file
        cause = str(err.__cause__ or err).strip().splitlines()[0]
        raise CorpusError(f"{path}: could not read as {builder}: {cause}") from err
    return _text_column(ds, field, [path])


def _text_column(ds: Dataset | IterableDataset, field: str, sources: list[str]):
    columns = ds.column_names
    if columns is not None and field not in columns:
        raise CorpusError(
            f"{', '.join(sources[:3])}: no '{field}' field (fields: {', '.join(columns)}); set text_field"
        )
    ds = ds.select_columns([field])
    return ds.rename_column(field, "text") if field != "text" else ds


def _is_document(example: dict, min_chars: int) -> bool:
    text = example["text"]
    return isinstance(text, str) and len(text.strip()) >= min_chars


def _drop_short(corpus, min_chars: int, specs: Sequence[str]):
    if isinstance(corpus, IterableDataset):
        corpus = corpus.filter(_is_document, fn_kwargs={"min_chars": min_chars})
        if next(iter(corpus), None) is None:
            raise CorpusError(f"corpus {list(specs)} has no documents")
        return corpus
    before = len(corpus)
    corpus = corpus.filter(_is_document, fn_kwargs={"min_chars": min_chars}, desc="drop empty documents")
    skipped = before - len(corpus)
    if len(corpus) == 0:
        raise CorpusError(
            f"corpus {list(specs)} has no documents ({skipped} records empty, non-text or shorter than "
            f"{min_chars} chars)"
        )
    if skipped:
        logger.info(
            "corpus: %d documents, skipped %d empty/non-text/shorter than %d chars",
            len(corpus),
            skipped,
            min_chars,
        )
    return corpus
