"""Load a text corpus from files, folders, globs or hub dataset names into one ``text`` column.

    load_corpus(["../shared/data/corpus/zh", "extra/*.jsonl", "wikitext"])
    -> Dataset({features: ['text'], num_rows: ...})
    load_corpus(["poetry/"], text_template="{rhythmic}\\n{paragraphs}")   # chinese-poetry JSON
    load_corpus(["TinyStories.txt"], document_separator="<|endoftext|>")

How a file becomes documents (``DocumentFormat``):
- ``.txt``: by line, blank-line paragraph, whole file, or at every ``document_separator``.
- ``.jsonl`` / ``.json`` / ``.csv`` / ``.tsv`` / ``.parquet`` / hub datasets: records, whose
  ``text_field`` is a string or a list of strings (joined by ``text_joiner``), or several fields
  combined by a ``text_template`` such as ``"{title}\\n{paragraphs}"``.
Bytes are decoded by ``mini_lm.text_files`` (UTF-8 with or without BOM; GB18030 / Big5 / UTF-16
detected and logged; or ``encoding``; bad bytes named by file, line and offset).

Nothing is dropped unseen: records that give no document are counted per reason and per file
(WARNING above ``SKIP_WARNING_SHARE``), files of other types in a folder are listed, a file none of
whose records has the field is an error naming the fields it has, and an empty corpus is an error.
Local files are read by one generator into an Arrow file in the datasets cache (keyed by file path,
size, mtime, format and this code; memory-mapped like any datasets cache), or into
``IterableDataset.from_generator`` when streaming.
"""

from __future__ import annotations

import csv
import glob
import hashlib
import itertools
import json
import logging
import os
import string
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.compute as pc
from datasets import Dataset, IterableDataset

from .. import records, text_files
from ..errors import UserError
from ..records import read_records
from ..text_files import iter_lines
from ..tokenization import looks_like_hub_id

logger = logging.getLogger(__name__)

BUILDERS = {
    ".txt": "text",
    ".jsonl": "json",
    ".json": "json",
    ".csv": "csv",
    ".tsv": "csv",
    ".parquet": "parquet",
}
SAMPLE_BY = ("line", "paragraph", "document")
ROWS_PER_BATCH = 10_000  # rows per Arrow record batch written to the cache
SKIP_WARNING_SHARE = 0.01  # a file losing more of its records than this is a WARNING, not an INFO line
FEATURES = datasets.Features(
    {"text": datasets.Value("string"), "source": datasets.Value("int32"), "skip": datasets.Value("string")}
)
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # a document in one CSV cell may exceed the 128 KiB default


class CorpusError(UserError, ValueError):
    """A corpus path, file or option that cannot be used."""


# --------------------------------------------------------------------------- paths


def resolve_corpus_specs(specs: Sequence[str]) -> tuple[dict[str, list[str]], list[str]]:
    """Split specs into local files grouped by kind, and hub dataset names.

    ``["a.txt", "dir/", "x/*.jsonl", "user/dataset"]`` -> ({"text": [...], "json": [...]}, ["user/dataset"])
    Files of other types inside a folder are ignored, and listed in a warning.
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
            found = _folder_files(spec)
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


def _folder_files(folder: str) -> list[str]:
    paths = sorted(p for p in Path(folder).rglob("*") if p.is_file() and not p.name.startswith("."))
    found = [str(p) for p in paths if p.suffix in BUILDERS]
    ignored = [str(p.relative_to(folder)) for p in paths if p.suffix not in BUILDERS]
    if ignored:
        shown = ", ".join(ignored[:10]) + (f" and {len(ignored) - 10} more" if len(ignored) > 10 else "")
        logger.warning(
            "%s: ignored %d file(s) of other types: %s (read: %s)",
            folder,
            len(ignored),
            shown,
            " ".join(BUILDERS),
        )
    if not found:
        raise CorpusError(f"corpus folder {folder} has no {'/'.join(BUILDERS)} files")
    return found


def _check_suffix(path: str) -> str:
    if Path(path).suffix not in BUILDERS:
        raise CorpusError(f"{path}: unsupported corpus file type (use {', '.join(BUILDERS)})")
    return path


# --------------------------------------------------------------------------- records -> documents


@dataclass(frozen=True)
class DocumentFormat:
    """How files and records become documents; ``document(record)`` -> (text, None) or (None, reason).

    >>> DocumentFormat(text_template="{title}: {lines}", text_joiner=" ").document({"title": "T", "lines": ["a", "b"]})
    ('T: a b', None)
    """

    text_field: str = "text"
    text_template: str | None = None
    text_joiner: str = "\n"
    sample_by: str = "line"
    document_separator: str | None = None
    encoding: str | None = None
    min_chars: int = 1

    def __post_init__(self):
        for name in ("text_template", "text_joiner", "document_separator"):
            # "\\n" typed on a command line means a newline: a literal backslash-n in every
            # document is never what was meant
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, value.replace("\\n", "\n").replace("\\t", "\t"))
        if self.sample_by not in SAMPLE_BY:
            raise CorpusError(f"text_sample_by must be one of {', '.join(SAMPLE_BY)}, got '{self.sample_by}'")
        if self.document_separator is not None:
            if not self.document_separator.strip() or "\n" in self.document_separator:
                raise CorpusError(
                    f"document_separator {self.document_separator!r} must be a non-blank string on one line"
                )
            if self.sample_by != "line":
                raise CorpusError(
                    f"set one: text_sample_by={self.sample_by} or document_separator "
                    f"{self.document_separator!r} (both say how .txt files split into documents)"
                )
        if self.text_template is not None:
            if self.text_field != "text":
                raise CorpusError(
                    f"set one: text_template {self.text_template!r} or text_field '{self.text_field}'"
                )
            names = [
                name for _, name, _, _ in string.Formatter().parse(self.text_template) if name is not None
            ]
            if not names or any(not n.isidentifier() for n in names):
                raise CorpusError(
                    f"text_template {self.text_template!r}: name the fields, e.g. '{{title}}\\n{{text}}' "
                    "(write {{ and }} for literal braces)"
                )

    @property
    def fields(self) -> list[str]:
        if self.text_template is None:
            return [self.text_field]
        return list(dict.fromkeys(n for _, n, _, _ in string.Formatter().parse(self.text_template) if n))

    def document(self, record) -> tuple[str | None, str | None]:
        if not isinstance(record, dict):
            return None, f"not a record ({type(record).__name__})"
        values = {}
        for name in self.fields:
            if name not in record:
                return None, f"no field '{name}'"
            value, problem = self._value(name, record[name])
            if problem:
                return None, problem
            values[name] = value
        text = (
            values[self.text_field] if self.text_template is None else self.text_template.format_map(values)
        )
        return self.keep(text)

    def keep(self, text: str) -> tuple[str | None, str | None]:
        stripped = len(text.strip())
        if stripped == 0:
            return None, "empty"
        if stripped < self.min_chars:
            return None, f"shorter than {self.min_chars} chars"
        return text, None

    def _value(self, name: str, value) -> tuple[str | None, str | None]:
        """A field's text: a string, a list of strings (joined); in a template also a number."""
        if isinstance(value, str):
            return value, None
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return self.text_joiner.join(value), None
        if self.text_template is not None and isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value), None
        kind = "a list with non-text items" if isinstance(value, list) else type(value).__name__
        return None, f"'{name}' is not text ({kind})"


# --------------------------------------------------------------------------- files -> records / texts


def _txt_documents(path: str, fmt: DocumentFormat) -> Iterator[str]:
    """Raw documents of a .txt file (blank lines and paragraphs are separators, not records)."""
    lines = iter_lines(path, fmt.encoding)
    if fmt.document_separator is not None:
        yield from _split_at(lines, fmt.document_separator)
    elif fmt.sample_by == "document":
        yield "".join(lines)
    elif fmt.sample_by == "paragraph":
        paragraph: list[str] = []
        for line in itertools.chain(lines, ["\n"]):  # a last blank line ends the last paragraph
            if line.strip():
                paragraph.append(line)
            elif paragraph:
                yield "".join(paragraph).rstrip("\n")
                paragraph = []
    else:
        yield from (line.rstrip("\n") for line in lines if line.strip())


def _split_at(lines: Iterator[str], separator: str) -> Iterator[str]:
    """``["a\\n", "<sep>\\n", "b<sep>c"]`` -> "a", "b", "c" (surrounding whitespace stripped)."""
    pieces: list[str] = []
    for line in lines:
        while separator in line:
            head, line = line.split(separator, 1)
            pieces.append(head)
            if "".join(pieces).strip():
                yield "".join(pieces).strip()
            pieces = []
        pieces.append(line)
    if "".join(pieces).strip():
        yield "".join(pieces).strip()


def _records(kind: str, path: str, fmt: DocumentFormat) -> Iterator[object]:
    if kind == "json":
        yield from (record for _, record in read_records(path, encoding=fmt.encoding))
    elif kind == "csv":
        delimiter = "\t" if path.endswith(".tsv") else ","
        reader = csv.DictReader(iter_lines(path, fmt.encoding), delimiter=delimiter)
        if not reader.fieldnames:
            raise CorpusError(f"{path}: no header row (the first line names the columns)")
        yield from reader
    else:  # parquet: only the columns the format reads
        import pyarrow.parquet as pq

        table = pq.ParquetFile(path)
        columns = [c for c in fmt.fields if c in table.schema_arrow.names]
        for batch in table.iter_batches(batch_size=4096, columns=columns):
            yield from batch.to_pylist()


def _documents(sources: list[list], fmt: dict, log_skips: bool) -> Iterator[dict]:
    """Rows {text, source, skip} of local files; ``sources``: [index, kind, path, size, mtime].

    Skipped records are rows too (text None, skip = the reason), so the counts per file survive the
    datasets cache; ``log_skips`` (streaming) reports each file when it ends instead."""
    fmt = DocumentFormat(**fmt)
    for index, kind, path, _size, _mtime in sources:
        skipped: Counter = Counter()
        total = 0
        if kind == "text":
            pairs = (fmt.keep(text) for text in _txt_documents(path, fmt))
        else:
            pairs = (fmt.document(record) for record in _records(kind, path, fmt))
        for text, reason in pairs:
            total += 1
            if reason is not None:
                skipped[reason] += 1
            yield {"text": text, "source": index, "skip": reason}
        if log_skips:
            _report_file(path, kind, fmt, total, skipped)


# --------------------------------------------------------------------------- the corpus


def load_corpus(
    specs: Sequence[str],
    text_field: str = "text",
    sample_by: str = "line",
    streaming: bool = False,
    hub_split: str = "train",
    min_chars: int = 1,
    text_template: str | None = None,
    text_joiner: str = "\n",
    document_separator: str | None = None,
    encoding: str | None = None,
) -> Dataset | IterableDataset:
    """One ``text`` column from every spec, in order; records that give no document counted per file."""
    fmt = DocumentFormat(
        text_field, text_template, text_joiner, sample_by, document_separator, encoding, min_chars
    )
    files, hub = resolve_corpus_specs(specs)
    if document_separator is not None and "text" not in files:
        logger.warning(
            "document_separator %r is unused: it splits .txt files, and %s has none",
            document_separator,
            list(specs),
        )
    local = [path for kind_paths in files.values() for path in kind_paths]
    sources = [_source(i, path) for i, path in enumerate(local)]
    names = local + list(hub)
    parts = [_local_part(sources, fmt, streaming)] if sources else []
    parts += [_hub_part(name, len(local) + i, fmt, hub_split, streaming) for i, name in enumerate(hub)]
    corpus = datasets.concatenate_datasets(parts) if len(parts) > 1 else parts[0]
    if isinstance(corpus, IterableDataset):
        docs = corpus.filter(lambda row: row["skip"] is None).select_columns(["text"])
        if next(iter(docs), None) is None:
            raise CorpusError(f"corpus {list(specs)} has no documents")
        return docs
    return _account(corpus, names, fmt, specs)


def _source(index: int, path: str) -> list:
    stat = os.stat(path)
    return [index, BUILDERS[Path(path).suffix], path, stat.st_size, stat.st_mtime_ns]


def _local_part(sources: list[list], fmt: DocumentFormat, streaming: bool):
    kwargs = {"sources": sources, "fmt": asdict(fmt), "log_skips": streaming}
    if streaming:
        return IterableDataset.from_generator(_documents, features=FEATURES, gen_kwargs=kwargs)
    path = Path(datasets.config.HF_DATASETS_CACHE) / "mini_lm_corpus" / f"{_fingerprint(kwargs)}.arrow"
    if not path.is_file():
        _write_arrow(path, _documents(**kwargs))
    return Dataset.from_file(str(path))  # memory-mapped, as a datasets cache file


def _write_arrow(path: Path, rows: Iterator[dict]) -> None:
    """Rows -> an Arrow stream file in batches (``Dataset.from_generator`` encodes row by row: 2x
    slower). Written under a temporary name, so a crash leaves nothing half-written to reuse."""
    path.parent.mkdir(parents=True, exist_ok=True)
    schema = FEATURES.arrow_schema
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
            batch: list[dict] = []
            for row in itertools.chain(rows, [None]):
                if row is not None:
                    batch.append(row)
                if batch and (row is None or len(batch) == ROWS_PER_BATCH):
                    writer.write_batch(pa.RecordBatch.from_pylist(batch, schema=schema))
                    batch = []
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _fingerprint(kwargs: dict) -> str:
    """Cache key: the files (path, size, mtime), the format, and the code that reads them."""
    code = b"".join(Path(m.__file__).read_bytes() for m in (sys.modules[__name__], records, text_files))
    payload = json.dumps([kwargs["sources"], kwargs["fmt"]], sort_keys=True).encode()
    return hashlib.sha256(code + payload).hexdigest()[:32]


def _hub_part(name: str, index: int, fmt: DocumentFormat, split: str, streaming: bool):
    try:
        ds = datasets.load_dataset(name, split=split, streaming=streaming)
    except Exception as err:  # datasets raises many types; say which name and that it was the hub
        raise CorpusError(
            f"'{name}' is not a local path and could not be loaded from the hub: {err}"
        ) from err
    missing = [f for f in fmt.fields if ds.column_names is not None and f not in ds.column_names]
    if missing:
        raise CorpusError(
            f"{name}: no field '{missing[0]}' (fields: {', '.join(ds.column_names)}); set text_field"
        )

    def to_rows(batch: dict) -> dict:
        n = len(next(iter(batch.values())))
        pairs = [fmt.document({f: batch[f][i] for f in fmt.fields}) for i in range(n)]
        return {"text": [t for t, _ in pairs], "source": [index] * n, "skip": [r for _, r in pairs]}

    return ds.map(to_rows, batched=True, remove_columns=ds.column_names, features=FEATURES)


def _account(corpus: Dataset, names: list[str], fmt: DocumentFormat, specs) -> Dataset:
    """Report skips per file, fail on a file none of whose records has the field, keep documents."""
    table = corpus.data.table.select(["source", "skip"])
    totals = dict(zip(*table.group_by("source").aggregate([([], "count_all")]).to_pydict().values()))
    skipped = table.filter(pc.is_valid(table.column("skip")))
    counts = skipped.group_by(["source", "skip"]).aggregate([([], "count_all")]).to_pydict()
    by_source: dict[int, Counter] = {}
    for source, reason, n in zip(counts["source"], counts["skip"], counts["count_all"]):
        by_source.setdefault(source, Counter())[reason] = n
    for source, reasons in sorted(by_source.items()):
        path = names[source]
        _report_file(path, BUILDERS.get(Path(path).suffix, "hub"), fmt, totals[source], reasons)
    docs = corpus
    if len(skipped):
        docs = corpus.filter(lambda skip: [s is None for s in skip], batched=True, input_columns=["skip"])
    docs = docs.select_columns(["text"])
    if len(docs) == 0:
        every = sum(by_source.values(), Counter())
        raise CorpusError(f"corpus {list(specs)} has no documents ({_reasons(every) or 'no records'})")
    logger.info("corpus: %d documents from %d source(s)", len(docs), len(names))
    return docs


def _report_file(path: str, kind: str, fmt: DocumentFormat, total: int, skipped: Counter) -> None:
    """One line per file that lost records: WARNING above SKIP_WARNING_SHARE (short documents are
    what min_document_chars asked for: INFO). A file none of whose records has the field: error."""
    n = sum(skipped.values())
    if not n:
        return
    missing = [r for r in skipped if r.startswith("no field")]
    if n == total and missing and kind != "hub":
        raise CorpusError(
            f"{path}: {missing[0]} in any of its {total} records (fields: "
            f"{', '.join(_first_fields(kind, path, fmt))}); set text_field or text_template"
        )
    asked = all(r.startswith("shorter than") for r in skipped)
    level = logging.WARNING if n > SKIP_WARNING_SHARE * total and not asked else logging.INFO
    share = 100 * n / total
    logger.log(level, "%s: skipped %d of %d records (%.0f%%): %s", path, n, total, share, _reasons(skipped))


def _reasons(counts: Counter) -> str:
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))  # most first, then by name
    return ", ".join(f"{n} {reason}" for reason, n in ordered)


def _first_fields(kind: str, path: str, fmt: DocumentFormat) -> list[str]:
    first = next(_records(kind, path, fmt), None)
    return sorted(first) if isinstance(first, dict) else []
