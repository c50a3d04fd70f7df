import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mini_lm.data.corpus import CorpusError, load_corpus, resolve_corpus_specs


@pytest.fixture()
def corpus_dir(tmp_path):
    d = tmp_path / "corpus"
    (d / "sub").mkdir(parents=True)
    (d / "a.txt").write_text("line one\r\n\r\nline two\nline three\n", encoding="utf-8")
    (d / "sub" / "b.jsonl").write_text(
        "\n".join(json.dumps({"text": t, "id": i}) for i, t in enumerate(["doc b1", "", "doc b2"])) + "\n"
    )
    (d / "c.json").write_text(json.dumps([{"text": "doc c1"}, {"text": "doc c2"}]))
    pq.write_table(pa.table({"text": ["doc p1", "doc p2"]}), d / "d.parquet")
    (d / "README.md").write_text("ignored: not a corpus suffix")
    return d


def test_folder_reads_every_format_and_skips_empty(corpus_dir, caplog):
    docs = load_corpus([str(corpus_dir)])
    assert sorted(docs["text"]) == sorted(
        ["line one", "line two", "line three", "doc b1", "doc b2", "doc c1", "doc c2", "doc p1", "doc p2"]
    )
    assert docs.column_names == ["text"]


def test_txt_sample_by(corpus_dir):
    path = str(corpus_dir / "a.txt")
    assert load_corpus([path], sample_by="paragraph")["text"] == ["line one", "line two\nline three\n"]
    assert len(load_corpus([path], sample_by="document")) == 1


def test_glob_and_text_field(tmp_path):
    for i in range(3):
        (tmp_path / f"part{i}.jsonl").write_text(json.dumps({"content": f"doc {i}"}) + "\n")
    docs = load_corpus([str(tmp_path / "part*.jsonl")], text_field="content")
    assert sorted(docs["text"]) == ["doc 0", "doc 1", "doc 2"]


def test_missing_text_field_names_file_and_field(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text(json.dumps({"body": "hi"}) + "\n")
    with pytest.raises(CorpusError, match=r"x\.jsonl.*no 'text' field.*body"):
        load_corpus([str(path)])


@pytest.mark.parametrize(
    "spec, message",
    [
        ("missing/file.txt", "corpus path not found"),
        ("./nope", "corpus path not found"),
        ("no_match_*.txt", "glob matches no files"),
    ],
)
def test_bad_paths(tmp_path, monkeypatch, spec, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CorpusError, match=message):
        load_corpus([spec])


def test_unsupported_file_type(tmp_path):
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(CorpusError, match="unsupported corpus file type"):
        load_corpus([str(tmp_path / "x.csv")])


def test_empty_corpus_is_an_error(tmp_path):
    (tmp_path / "empty.txt").write_text("\n\n   \n")
    with pytest.raises(CorpusError, match="has no documents"):
        load_corpus([str(tmp_path / "empty.txt")])
    with pytest.raises(CorpusError, match="no corpus given"):
        load_corpus([])


def test_hub_name_is_kept_for_the_hub(monkeypatch):
    files, hub = resolve_corpus_specs(["wikitext", "user/some-dataset"])
    assert files == {} and hub == ["wikitext", "user/some-dataset"]
    # offline here: the hub path is tried and fails with a message that says so
    with pytest.raises(CorpusError, match="not a local path and could not be loaded from the hub"):
        load_corpus(["user/some-dataset-that-does-not-exist"])


def test_streaming(corpus_dir):
    stream = load_corpus([str(corpus_dir / "a.txt"), str(corpus_dir / "sub")], streaming=True)
    assert [d["text"] for d in stream] == ["line one", "line two", "line three", "doc b1", "doc b2"]


def test_real_chinese_corpus(shared_data):
    docs = load_corpus([str(shared_data / "corpus/zh/hongloumeng.txt")])
    assert len(docs) > 2000
    assert not any(t.endswith("\r") for t in docs["text"][:200])  # CRLF stripped
