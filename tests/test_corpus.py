import json
import logging

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
    assert load_corpus([path], sample_by="paragraph")["text"] == ["line one", "line two\nline three"]
    assert len(load_corpus([path], sample_by="document")) == 1


def test_glob_and_text_field(tmp_path):
    for i in range(3):
        (tmp_path / f"part{i}.jsonl").write_text(json.dumps({"content": f"doc {i}"}) + "\n")
    docs = load_corpus([str(tmp_path / "part*.jsonl")], text_field="content")
    assert sorted(docs["text"]) == ["doc 0", "doc 1", "doc 2"]


def test_missing_text_field_names_file_and_field(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text(json.dumps({"body": "hi"}) + "\n")
    with pytest.raises(
        CorpusError, match=r"x\.jsonl: no field 'text' in any of its 1 records \(fields: body\)"
    ):
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
    (tmp_path / "x.docx").write_text("a,b\n")
    with pytest.raises(CorpusError, match="unsupported corpus file type"):
        load_corpus([str(tmp_path / "x.docx")])


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


# --------------------------------------------------------------------------- structured corpora (issue 13)

POEMS = [
    {
        "author": "李白",
        "paragraphs": ["床前明月光，疑是地上霜。", "举头望明月，低头思故乡。"],
        "rhythmic": "静夜思",
    },
    {
        "author": "王之涣",
        "paragraphs": ["白日依山尽，黄河入海流。", "欲穷千里目，更上一层楼。"],
        "rhythmic": "登鹳雀楼",
    },
]


def test_a_list_valued_text_field_is_joined(tmp_path):
    """chinese-poetry: {"paragraphs": [...]} was "has no documents (2 records empty, non-text ...)"."""
    path = tmp_path / "poet.tang.0.json"
    path.write_text(json.dumps(POEMS, ensure_ascii=False), encoding="utf-8")
    docs = load_corpus([str(path)], text_field="paragraphs")
    assert docs["text"] == [
        "床前明月光，疑是地上霜。\n举头望明月，低头思故乡。",
        "白日依山尽，黄河入海流。\n欲穷千里目，更上一层楼。",
    ]
    assert load_corpus([str(path)], text_field="paragraphs", text_joiner="")["text"][0] == (
        "床前明月光，疑是地上霜。举头望明月，低头思故乡。"
    )


def test_a_text_template_combines_fields(tmp_path):
    path = tmp_path / "poems.jsonl"
    path.write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in POEMS), encoding="utf-8")
    docs = load_corpus([str(path)], text_template="《{rhythmic}》{author}\n{paragraphs}")
    assert docs["text"][0] == "《静夜思》李白\n床前明月光，疑是地上霜。\n举头望明月，低头思故乡。"
    with pytest.raises(
        CorpusError,
        match=r"poems\.jsonl: no field 'title' in any of its 2 records \(fields: author, paragraphs, rhythmic\)",
    ):
        load_corpus([str(path)], text_template="{title}\n{paragraphs}")
    with pytest.raises(CorpusError, match=r"text_template '\{0\}': name the fields"):
        load_corpus([str(path)], text_template="{0}")
    with pytest.raises(CorpusError, match="set one: text_template .* or text_field"):
        load_corpus([str(path)], text_field="paragraphs", text_template="{rhythmic}")


def test_string_and_list_records_in_one_file_are_all_kept(tmp_path, caplog):
    """Once the list records were dropped with only an INFO line."""
    path = tmp_path / "mixed.jsonl"
    rows = [{"text": "plain"}, {"text": ["a", "b"]}, {"text": ["c"]}, {"text": 7}, {"text": ""}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    with caplog.at_level(logging.INFO, logger="mini_lm"):
        docs = load_corpus([str(path)])
    assert docs["text"] == ["plain", "a\nb", "c"]
    warning = next(r for r in caplog.records if r.levelno == logging.WARNING and "mixed.jsonl" in r.message)
    assert "skipped 2 of 5 records (40%): 1 'text' is not text (int), 1 empty" in warning.message


def test_csv_and_tsv_text_columns(tmp_path):
    (tmp_path / "a.csv").write_text('id,text\n1,"first, with a comma"\n2,"two\nlines"\n', encoding="utf-8")
    (tmp_path / "b.tsv").write_text("title\tbody\nT\tbody one\nU\tbody two\n", encoding="utf-8")
    assert load_corpus([str(tmp_path / "a.csv")])["text"] == ["first, with a comma", "two\nlines"]
    tsv = load_corpus([str(tmp_path / "b.tsv")], text_template="{title}: {body}")
    assert tsv["text"] == ["T: body one", "U: body two"]


def test_real_csv_with_a_template(shared_data):
    """CMMLU's dev split is CSV with a header `,Question,A,B,C,D,Answer`."""
    path = shared_data / "eval/cmmlu/dev/chinese_history.csv"
    docs = load_corpus(
        [str(path)], text_template="{Question}\nA. {A}\nB. {B}\nC. {C}\nD. {D}\n答案：{Answer}"
    )
    assert len(docs) == 5 and all(t.count("\n") >= 5 and "答案：" in t for t in docs["text"])


def test_document_separator_splits_tinystories_style_txt(tmp_path):
    """TinyStories separates stories with an <|endoftext|> line; blank-line mode split inside stories."""
    path = tmp_path / "stories.txt"
    path.write_text(
        "Once upon a time a cat sat.\n\nIt was happy.\n<|endoftext|>\nTom had a ball.<|endoftext|>\n"
        "The end.\n",
        encoding="utf-8",
    )
    docs = load_corpus([str(path)], document_separator="<|endoftext|>")
    assert docs["text"] == ["Once upon a time a cat sat.\n\nIt was happy.", "Tom had a ball.", "The end."]
    with pytest.raises(CorpusError, match="set one: text_sample_by=paragraph or document_separator"):
        load_corpus([str(path)], sample_by="paragraph", document_separator="<|endoftext|>")


def test_folder_lists_the_files_it_ignores(corpus_dir, caplog):
    (corpus_dir / "notes.docx").write_bytes(b"PK\x03\x04")
    with caplog.at_level(logging.WARNING):
        load_corpus([str(corpus_dir)])
    assert f"{corpus_dir}: ignored 2 file(s) of other types: README.md, notes.docx" in caplog.text


def test_encodings_in_a_corpus(tmp_path, caplog):
    """GBK .txt and .jsonl are detected and read; a BOM is never text; bad bytes are located."""
    story = "话说贾宝玉在家中读书，忽然听见外面有人说话。\n黛玉笑道：“你又来了。”\n"
    (tmp_path / "gbk.txt").write_bytes(story.encode("gbk"))
    (tmp_path / "gbk.jsonl").write_bytes(
        "".join(json.dumps({"text": line}, ensure_ascii=False) + "\n" for line in story.splitlines()).encode(
            "gbk"
        )
    )
    (tmp_path / "bom.txt").write_bytes(b"\xef\xbb\xbf" + "第一行\n第二行\n".encode())
    with caplog.at_level(logging.INFO, logger="mini_lm"):
        docs = load_corpus([str(tmp_path)])
    assert sorted(docs["text"]) == sorted(story.splitlines() * 2 + ["第一行", "第二行"])
    assert "gbk.txt: not UTF-8; decoding as gb18030" in caplog.text
    bad = tmp_path / "bad" / "x.jsonl"
    bad.parent.mkdir()
    bad.write_bytes(b'{"text": "ok"}\n{"text": "\xff\xfe"}\n')
    with pytest.raises(ValueError, match=r"x\.jsonl:2: byte offset 25: cannot decode"):
        load_corpus([str(bad)])
    assert load_corpus([str(bad)], encoding="latin-1")["text"] == ["ok", "ÿþ"]


def test_streaming_reads_the_same_and_reports_as_it_goes(tmp_path, caplog):
    path = tmp_path / "mixed.jsonl"
    rows = [{"text": "plain"}, {"text": ["a", "b"]}, {"text": 7}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        assert [d["text"] for d in load_corpus([str(path)], streaming=True)] == ["plain", "a\nb"]
    assert "mixed.jsonl: skipped 1 of 3 records (33%): 1 'text' is not text (int)" in caplog.text
    with pytest.raises(CorpusError, match=r"mixed\.jsonl: no field 'body' in any of its 3 records"):
        load_corpus([str(path)], text_field="body", streaming=True)


def test_an_edited_file_is_read_again_not_taken_from_the_cache(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text(json.dumps({"text": "first"}) + "\n", encoding="utf-8")
    assert load_corpus([str(path)])["text"] == ["first"]
    assert load_corpus([str(path)])["text"] == ["first"]  # the cached copy
    path.write_text(json.dumps({"text": "second version"}) + "\n", encoding="utf-8")
    assert load_corpus([str(path)])["text"] == ["second version"]
    assert load_corpus([str(path)], text_template="<{text}>")["text"] == [
        "<second version>"
    ]  # format is in the key
