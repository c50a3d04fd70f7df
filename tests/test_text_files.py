"""mini_lm/text_files.py: the one reader of text files' bytes (corpora, SFT and other record files):
UTF-8 with or without BOM, GB18030 / Big5 / UTF-16 detected, an ``encoding`` that overrides, and
undecodable bytes named by file, line and byte offset."""

import json
import logging

import pytest

from mini_lm.records import read_records
from mini_lm.text_files import TextFileError, detect_encoding, iter_lines, read_text

POEM = "床前明月光，疑是地上霜。\n举头望明月，低头思故乡。\n"
STORY = "话说贾宝玉在家中读书，忽然听见外面有人说话。\r\n黛玉笑道：“你又来了。”\r\n"


def test_utf8_with_or_without_bom_reads_the_same(tmp_path):
    plain, bom = tmp_path / "plain.txt", tmp_path / "bom.txt"
    plain.write_bytes(POEM.encode("utf-8"))
    bom.write_bytes(b"\xef\xbb\xbf" + POEM.encode("utf-8"))
    assert read_text(plain) == read_text(bom) == POEM
    assert list(iter_lines(bom)) == list(iter_lines(plain)) == POEM.splitlines(keepends=True)
    assert list(iter_lines(bom, encoding="utf-8"))[0] == "床前明月光，疑是地上霜。\n"  # a named utf-8 too


@pytest.mark.parametrize("codec, detected", [("gbk", "gb18030"), ("gb18030", "gb18030"), ("big5", "big5")])
def test_chinese_legacy_encodings_are_detected_with_an_info_line(tmp_path, caplog, codec, detected):
    text = (STORY if codec != "big5" else "今天天氣很好，我們去公園散步吧。\r\n") * 3
    path = tmp_path / f"{codec}.txt"
    path.write_bytes(text.encode(codec))
    with caplog.at_level(logging.INFO, logger="mini_lm"):
        lines = list(iter_lines(path))
    assert lines == text.replace("\r\n", "\n").splitlines(keepends=True)  # CRLF -> LF, like text mode
    assert detect_encoding(path) == detected
    assert f"{path}: not UTF-8; decoding as {detected}" in caplog.text
    assert text.splitlines()[0][:8] in caplog.text  # a decoded sample shows the guess is right


@pytest.mark.parametrize("codec", ["utf-16", "utf-16-le", "utf-16-be"])
def test_utf16_with_or_without_bom(tmp_path, codec):
    path = tmp_path / "u16.txt"
    path.write_bytes((POEM * 2).encode(codec))
    assert read_text(path) == POEM * 2
    assert list(iter_lines(path)) == (POEM * 2).splitlines(keepends=True)


def test_the_encoding_option_wins_over_detection(tmp_path):
    path = tmp_path / "latin.txt"
    path.write_bytes("café au lait, déjà vu\n".encode("cp1252"))
    with pytest.raises(
        TextFileError, match=r"latin\.txt:1: byte offset 3: cannot decode b'\\xe9.*set encoding"
    ):
        read_text(path)
    assert read_text(path, encoding="cp1252") == "café au lait, déjà vu\n"
    with pytest.raises(TextFileError, match="unknown encoding 'klingon'"):
        read_text(path, encoding="klingon")


def test_undecodable_bytes_name_file_line_and_byte_offset(tmp_path, monkeypatch):
    path = tmp_path / "broken.txt"
    good = "第一行\n第二行\n".encode()  # 20 bytes
    path.write_bytes(good + b"third \xff\xfe line\n")
    with pytest.raises(
        TextFileError, match=r"broken\.txt:3: byte offset 26: cannot decode b'\\xff.*a corrupt byte"
    ):
        list(iter_lines(path))
    # a GBK file whose head is plain ASCII passes the sniff, then fails where the Chinese starts
    monkeypatch.setattr("mini_lm.text_files.SNIFF_BYTES", 16)
    late = tmp_path / "late_gbk.txt"
    late.write_bytes(b"ascii line\n" * 3 + (STORY * 4).encode("gbk"))
    with pytest.raises(TextFileError, match=r"late_gbk\.txt:4: byte offset 33: .*gb18030"):
        list(iter_lines(late))
    assert list(iter_lines(late, encoding="gbk"))[-1] == STORY.splitlines()[-1] + "\n"


def test_records_go_through_the_same_reader(tmp_path):
    """SFT / prompt / probe files: a BOM is stripped, GBK is detected, bad bytes are located."""
    rows = [{"text": "你好，世界。今天天气很好，我们去公园散步吧。"}, {"text": "第二条记录，还是中文。"}]
    body = "\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n"
    bom, gbk, listed = tmp_path / "bom.jsonl", tmp_path / "gbk.jsonl", tmp_path / "gbk.json"
    bom.write_bytes(b"\xef\xbb\xbf" + body.encode("utf-8"))
    gbk.write_bytes(body.encode("gbk"))
    listed.write_bytes(json.dumps(rows, ensure_ascii=False).encode("gbk"))
    for path in (bom, gbk, listed):
        assert [r for _, r in read_records(path)] == rows
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(body.encode("utf-8") + b'{"text": "\xff"}\n')
    with pytest.raises(TextFileError, match=r"bad\.jsonl:3: byte offset \d+"):
        list(read_records(bad))


def test_a_record_file_torn_mid_character_is_still_utf8(tmp_path, caplog):
    """A crash mid-append cuts a Chinese character: the file stays UTF-8 (no re-detection as some
    other encoding), the torn line is skipped and counted where asked, named otherwise."""
    path = tmp_path / "probes.jsonl"
    whole = json.dumps({"answer": "宝玉笑道"}, ensure_ascii=False).encode()
    path.write_bytes(whole + b"\n" + whole[:-4])  # the second line ends inside 道
    with caplog.at_level(logging.WARNING):
        assert [r for _, r in read_records(path, skip_bad_lines=True)] == [{"answer": "宝玉笑道"}]
    assert "skipped 1 unreadable line(s) [2]" in caplog.text
    with pytest.raises(TextFileError, match=r"probes\.jsonl:2: byte offset \d+: cannot decode .* as utf-8"):
        list(read_records(path))
