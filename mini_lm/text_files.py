"""Text files' bytes -> str, for every reader of user files (corpora, SFT data, prompt and probe files).

    read_text("poems.json")                 # UTF-8, a BOM stripped
    for line in iter_lines("corpus.txt"):   # GBK / GB18030 / Big5 / UTF-16 detected, decoded, logged
        ...
    iter_lines("corpus.txt", encoding="gbk")  # the user's word wins over detection

UTF-8 (with or without a BOM, which is never part of the text) is the default. A file that is not
UTF-8 is sniffed with charset-normalizer, restricted to the encodings Chinese corpora come in
(GB18030, a superset of GBK and GB2312; Big5; UTF-16 / UTF-32), and decoded with an INFO line
that shows a decoded sample, so a wrong guess is visible at once. Anything else (a Western
code page, binary data) is an error naming file, line and byte offset and asking for ``encoding``:
a guess there would silently train on mojibake. Lines end in "\\n" ("\\r\\n" is translated, as
text mode does).
"""

from __future__ import annotations

import codecs
import functools
import logging
import os
from collections.abc import Iterator
from pathlib import Path

logger = logging.getLogger(__name__)

SNIFF_BYTES = 1 << 20  # the head that decides a file's encoding (charset-normalizer samples within it)
# Detected without being asked. Other guesses only become a hint in the error message.
AUTO_ENCODINGS = ("gb18030", "big5", "utf_16", "utf_16_le", "utf_16_be", "utf_32", "utf_32_le", "utf_32_be")
_BOMS = (  # UTF-32's little-endian BOM starts with UTF-16's: test it first
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


class TextFileError(ValueError):
    """A file that cannot be decoded as text; the message names file, line, byte offset and the fix."""


def read_text(path: str | os.PathLike, encoding: str | None = None) -> str:
    """The whole file as str: ``encoding``, else UTF-8 (BOM stripped), else detected."""
    return "".join(iter_lines(path, encoding))


def iter_lines(
    path: str | os.PathLike, encoding: str | None = None, skip_undecodable: bool = False
) -> Iterator[str | None]:
    """Lines with their "\\n" ("\\r\\n" -> "\\n"), decoded as ``read_text`` says; a BOM is dropped.

    ``skip_undecodable``: a line that cannot be decoded comes out as None instead of raising (a
    record file torn mid-character by a crash), so the caller can count it by its line number.
    """
    codec = detect_encoding(path, encoding)
    if _ascii_compatible(codec):
        yield from _byte_lines(Path(path), codec, bool(encoding), skip_undecodable)
        return
    # UTF-16/32: a newline is more than one byte, so the file is decoded whole (they are rare and small)
    raw = Path(path).read_bytes()
    try:
        text = raw.decode(codec)
    except UnicodeDecodeError as err:
        line = raw[: err.start].decode(codec, errors="replace").count("\n") + 1
        bad = raw[err.start : err.end]
        raise _decode_error(path, codec, line, err.start, bad, explicit=bool(encoding)) from None
    *lines, last = text.lstrip("\ufeff").replace("\r\n", "\n").split("\n")  # "\n" only, as the bytes path
    yield from (line + "\n" for line in lines)
    if last:
        yield last


def detect_encoding(path: str | os.PathLike, encoding: str | None = None) -> str:
    """The codec to read ``path`` with: ``encoding`` if given, "utf-8" / "utf-8-sig" for UTF-8, a
    BOM's codec, else the detected one among ``AUTO_ENCODINGS`` (logged with a decoded sample)."""
    if encoding:
        try:
            codecs.lookup(encoding)
        except LookupError:
            raise TextFileError(
                f"{path}: unknown encoding '{encoding}' (e.g. utf-8, gb18030, gbk, big5, utf-16)"
            ) from None
        return encoding
    stat = os.stat(path)
    return _sniff(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=4096)
def _sniff(path: str, size: int, mtime_ns: int) -> str:
    """Cached per file version, so a corpus read twice (tokenizer, then packing) logs once."""
    with open(path, "rb") as f:
        head = f.read(SNIFF_BYTES)
    for bom, codec in _BOMS:
        if head.startswith(bom):
            return codec
    # A multi-byte character cut at the end (of the head, or of a file torn by a crash) is no
    # evidence against UTF-8: the line reader locates a real error exactly.
    if b"\x00" not in head and _utf8_prefix_ok(head):
        return "utf-8"
    from charset_normalizer import from_bytes

    match = from_bytes(head, cp_isolation=list(AUTO_ENCODINGS)).best()
    if match is None:
        raise _first_bad_byte(path, head)
    sample = str(match).lstrip("\ufeff").strip().splitlines()
    # chaos: charset-normalizer's measure of how garbled the decoded text looks (0 = clean)
    level = logging.WARNING if match.chaos >= 0.1 else logging.INFO
    logger.log(
        level,
        "%s: not UTF-8; decoding as %s (detected by charset-normalizer%s; set encoding to override): %r",
        path,
        match.encoding,
        ", unsure: check the sample" if level == logging.WARNING else "",
        (sample[0] if sample else "")[:40],
    )
    return match.encoding


def _utf8_prefix_ok(head: bytes) -> bool:
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return False
    return True


def _ascii_compatible(codec: str) -> bool:
    """Splitting the bytes at b"\\n" splits lines (UTF-8, GB18030, Big5 ...; not UTF-16/32)."""
    try:
        return "a\n".encode(codec).endswith(b"a\n") and not codecs.lookup(codec).name.startswith("utf-16")
    except (LookupError, UnicodeError):
        return False


def _byte_lines(path: Path, codec: str, explicit: bool, skip_undecodable: bool) -> Iterator[str | None]:
    decode_as = "utf-8" if codecs.lookup(codec).name in ("utf-8", "utf-8-sig") else codec
    offset = 0
    with path.open("rb") as f:
        for line_no, raw in enumerate(f, 1):
            if line_no == 1 and decode_as == "utf-8" and raw.startswith(codecs.BOM_UTF8):
                raw, offset = raw[3:], 3  # a BOM is never text, whatever the file claims
            try:
                line = raw.decode(decode_as)
            except UnicodeDecodeError as err:
                if not skip_undecodable:
                    bad = raw[err.start : err.end]
                    raise _decode_error(path, codec, line_no, offset + err.start, bad, explicit) from None
                line = None
            offset += len(raw)
            if line is None:
                yield None
                continue
            yield line[:-2] + "\n" if line.endswith("\r\n") else line


def _first_bad_byte(path: str, head: bytes) -> TextFileError:
    """The error for a file whose head is neither UTF-8 nor a detectable encoding."""
    try:
        head.decode("utf-8")
        start = head.index(b"\x00")  # valid UTF-8 with NUL bytes: binary, or UTF-16 without BOM
        bad = b"\x00"
    except UnicodeDecodeError as err:
        start, bad = err.start, head[err.start : err.end]
    line = head[:start].count(b"\n") + 1
    return _decode_error(path, "utf-8", line, start, bad, explicit=False)


def _decode_error(path, codec: str, line: int, offset: int, bad: bytes, explicit: bool) -> TextFileError:
    fix = "check the encoding option" if explicit else _fix(path, codec, offset, bad)
    return TextFileError(f"{path}:{line}: byte offset {offset}: cannot decode {bad[:8]!r} as {codec} ({fix})")


def _fix(path, codec: str, offset: int, bad: bytes) -> str:
    """What to do: the encoding the bytes from ``offset`` look like, where a guess is meaningful."""
    from charset_normalizer import from_bytes

    if bad == b"\x00":
        return "NUL bytes: a binary file, or UTF-16 without a BOM: set encoding (e.g. utf-16-le)"
    with open(path, "rb") as f:
        f.seek(max(0, offset - (1 << 16)))
        before = f.read(offset - f.tell())
        after = f.read(1 << 16)
    if not before.isascii():  # real text decoded up to here: a corrupt byte, not a wrong encoding
        return f"the text before it reads as {codec}: a corrupt byte, or set encoding if the file is in another one"
    match = from_bytes(after, cp_isolation=list(AUTO_ENCODINGS)).best()
    if match is not None:
        return f"it looks like {match.encoding}: set encoding: {match.encoding}"
    match = from_bytes(after).best()  # a Western code page, say: only ever a hint, never a silent guess
    return f"it may be {match.encoding}: set encoding if so" if match else "set encoding (e.g. gb18030)"
