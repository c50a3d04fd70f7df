"""mini_lm/records.py: the one reader of JSON / JSONL record files (SFT data, probe questions and
results, prompt files), so a bad line reads the same everywhere."""

import logging

import pytest

from mini_lm.records import RecordError, read_records


def test_jsonl_records_say_where_they_come_from(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"x": 1}\n\n{"x": 2}\n', encoding="utf-8")
    assert list(read_records(path)) == [(f"{path}:1", {"x": 1}), (f"{path}:3", {"x": 2})]


def test_a_bad_jsonl_line_is_named_or_skipped_and_counted(tmp_path, caplog):
    path = tmp_path / "probes.jsonl"
    path.write_text('{"x": 1}\n{"x": 2, "y\n{"x": 3}\n', encoding="utf-8")
    with pytest.raises(RecordError, match=r"probes\.jsonl:2: not valid JSON \(.* at column \d+\)"):
        list(read_records(path))
    with caplog.at_level(logging.WARNING):
        assert [r["x"] for _, r in read_records(path, skip_bad_lines=True)] == [1, 3]
    assert "skipped 1 unreadable line(s) [2]" in caplog.text


def test_json_holds_a_list_or_one_record(tmp_path):
    listed, single, scalar, broken = (
        tmp_path / f"{n}.json" for n in ("listed", "single", "scalar", "broken")
    )
    listed.write_text('[{"x": 1}, {"x": 2}]', encoding="utf-8")
    single.write_text('{"x": 1}', encoding="utf-8")
    scalar.write_text("3", encoding="utf-8")
    broken.write_text('[{"x": 1},\n{"x": ]', encoding="utf-8")
    assert [where for where, _ in read_records(listed)] == [f"{listed} record 1", f"{listed} record 2"]
    assert list(read_records(single)) == [(f"{single} record 1", {"x": 1})]
    with pytest.raises(RecordError, match="must hold a list of records, got int"):
        list(read_records(scalar))
    with pytest.raises(RecordError, match=r"broken\.json:2: not valid JSON"):
        list(read_records(broken))
