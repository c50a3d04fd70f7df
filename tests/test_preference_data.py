"""Preference data: the three formats (two real shared files), the SFT reader's rules on each side of
a pair, bad pairs failing with file, record and field (or counted with skip_invalid), identical
answers dropped, truncation that keeps the prompt and says where it cut one side only, and the
audit. Token ids match the SFT labels of the same conversation."""

import json
from pathlib import Path

import pytest

from mini_lm.config import PreferenceDataArguments
from mini_lm.data.chat import ChatDataError
from mini_lm.data.preference import (
    build_preference_datasets,
    encode_pair,
    load_preference_pairs,
)
from mini_lm.data.preference_audit import PreferenceAuditError
from mini_lm.data.sft import EndOfTurn, encode_conversation
from mini_lm.labels import IGNORE_INDEX
from mini_lm.tokenization import special_texts


def write_jsonl(path: Path, records) -> str:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return str(path)


def load(path, **kwargs):
    return load_preference_pairs(PreferenceDataArguments(train_files=[str(path)], **kwargs))


def turn(speaker, text):
    return {"from": speaker, "value": text}


def msg(role, text):
    return {"role": role, "content": text}


RANKING = {"conversations": [turn("human", "2+2?")], "chosen": turn("gpt", "4"), "rejected": turn("gpt", "5")}
PAIR = {"prompt": "2+2?", "chosen": "4", "rejected": "5"}


# --------------------------------------------------------------------------- real files


def test_sharegpt_ranking_real_file(shared_data):
    path = str(shared_data / "preference/dpo_zh_demo.json")
    pairs = load(path)
    assert pairs.stats.chat.files[path] == {"format": "sharegpt_ranking", "records": 300, "kept": 300}
    raw = json.loads(Path(path).read_text(encoding="utf-8"))
    by_record = {r["record"]: r for r in pairs.train}
    for i in (1, 2, 150, 300):  # 1-based record numbers; 64 records open with a system turn
        src, row = raw[i - 1], by_record[f"{path} record {i}"]
        assert row["chosen"] == msg("assistant", src["chosen"]["value"])
        assert row["rejected"] == msg("assistant", src["rejected"]["value"])
        assert [m["content"] for m in row["prompt"]] == [t["value"] for t in src["conversations"]]
        assert row["prompt"][-1]["role"] == "user"
    systems = sum(r["prompt"][0]["role"] == "system" for r in pairs.train)
    assert systems == 64


def test_message_pairs_real_file_with_content_parts(shared_data):
    path = str(shared_data / "preference/v1_dpo_demo.jsonl")
    pairs = load(path)
    assert pairs.stats.chat.files[path] == {"format": "message_pairs", "records": 10, "kept": 10}
    first = json.loads(Path(path).read_text(encoding="utf-8").splitlines()[0])
    row = next(r for r in pairs.train if r["record"] == f"{path}:1")
    assert [m["role"] for m in row["prompt"]] == ["system", "user"]
    assert row["chosen"]["content"] == first["chosen_messages"][-1]["content"][0]["value"]  # parts joined
    assert row["rejected"]["content"] == first["rejected_messages"][-1]["content"][0]["value"]


def test_trl_formats_strings_messages_and_implicit_prompt(tmp_path):
    records = [
        PAIR,
        {
            "prompt": [msg("system", "be brief"), msg("user", "2+2?")],
            "chosen": [msg("assistant", "4")],
            "rejected": [msg("assistant", "5")],
        },
        {
            "chosen": [msg("user", "2+2?"), msg("assistant", "4")],
            "rejected": [msg("user", "2+2?"), msg("assistant", "5")],
        },
    ]
    pairs = load(write_jsonl(tmp_path / "trl.jsonl", records), system_prompt="You are MiniLM.")
    rows = sorted(pairs.train, key=lambda r: r["record"])
    assert [r["prompt"] for r in rows] == [
        [msg("system", "You are MiniLM."), msg("user", "2+2?")],
        [msg("system", "be brief"), msg("user", "2+2?")],  # a pair's own system message wins
        [msg("system", "You are MiniLM."), msg("user", "2+2?")],
    ]
    assert all(r["chosen"] == msg("assistant", "4") and r["rejected"] == msg("assistant", "5") for r in rows)


def test_multi_turn_prompt_and_placeholders(tmp_path):
    record = {
        "conversations": [turn("human", "hi"), turn("gpt", "I am {{name}}"), turn("human", "and?")],
        "chosen": turn("gpt", "{{name}} helps"),
        "rejected": turn("gpt", "no"),
    }
    pairs = load(write_jsonl(tmp_path / "multi.jsonl", [record]), placeholders={"name": "MiniLM"})
    row = pairs.train[0]
    assert [m["role"] for m in row["prompt"]] == ["user", "assistant", "user"]
    assert row["prompt"][1]["content"] == "I am MiniLM" and row["chosen"]["content"] == "MiniLM helps"


# --------------------------------------------------------------------------- bad pairs


BAD = [
    (
        {"conversations": [turn("human", "q")], "rejected": turn("gpt", "a")},
        "record 1: missing field 'chosen'",
    ),
    (
        {**RANKING, "rejected": turn("human", "5")},
        "record 1: rejected is not an assistant turn: from 'human'",
    ),
    ({**RANKING, "conversations": []}, "record 1: empty prompt"),
    ({**RANKING, "conversations": [turn("system", "sys")]}, "record 1: empty prompt"),
    ({**RANKING, "conversations": [turn("human", "   ")]}, "record 1: empty prompt"),
    (
        {**RANKING, "conversations": [turn("human", "a"), turn("human", "b")]},
        "record 1: chosen side: roles out of order: message 1 is 'user' after 'user'",
    ),
    ({**PAIR, "rejected": [msg("user", "5")]}, "record 1: rejected is not an assistant turn"),
    ({**PAIR, "prompt": ""}, "record 1: empty prompt"),
    (
        {"chosen_messages": [msg("user", "q"), msg("assistant", "a")]},
        "record 1: missing field 'rejected_messages'",
    ),
    (
        {
            "chosen_messages": [msg("user", "q"), msg("assistant", "a")],
            "rejected_messages": [msg("user", "other q"), msg("assistant", "b")],
        },
        "record 1: chosen and rejected differ before their answers",
    ),
    (
        {
            "chosen_messages": [msg("assistant", "a"), msg("user", "q"), msg("assistant", "a")],
            "rejected_messages": [msg("assistant", "a"), msg("user", "q"), msg("assistant", "b")],
        },
        "roles out of order: message 0 is 'assistant' as the first message",
    ),
    (
        {
            "chosen_messages": [msg("user", "q"), msg("assistant", "a")],
            "rejected_messages": [msg("user", "q")],
        },
        "record 1: rejected_messages is not an assistant turn",
    ),
    (
        {**PAIR, "tools": '[{"name": "f"}]'},
        "record 1: tools: preference pairs with tool calls are not supported",
    ),
    (
        {
            "prompt": [msg("user", "q")],
            "chosen": [{"role": "assistant", "content": "", "tool_calls": [{"name": "f", "arguments": {}}]}],
            "rejected": [msg("assistant", "b")],
        },
        "record 1: the assistant message uses tools: preference pairs with tool calls are not supported",
    ),
]


@pytest.mark.parametrize("record, message", BAD, ids=[m.split(": ", 1)[-1][:40] for _, m in BAD])
def test_bad_pairs_fail_naming_file_record_and_field(tmp_path, record, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([record]), encoding="utf-8")
    with pytest.raises(ChatDataError) as err:
        load(path)
    assert str(err.value).startswith(str(path)) and message in str(err.value), str(err.value)


def test_skip_invalid_counts_and_identical_answers_are_dropped(tmp_path):
    records = [
        RANKING,
        {**RANKING, "rejected": turn("human", "5")},
        {**RANKING, "chosen": turn("gpt", "5 ")},  # identical to rejected once stripped
        "not an object",
    ]
    path = tmp_path / "mixed.json"
    path.write_text(json.dumps(records), encoding="utf-8")
    with pytest.raises(ChatDataError, match="record 2: rejected is not an assistant turn"):
        load(path)
    pairs = load(path, skip_invalid=True)
    assert len(pairs.train) == 1 and pairs.stats.identical == 1
    assert dict(pairs.stats.chat.skipped) == {
        "invalid: answer not assistant": 1,
        "invalid: record not an object": 1,
    }
    only_identical = write_jsonl(tmp_path / "same.jsonl", [{**PAIR, "chosen": "5"}])
    with pytest.raises(
        ChatDataError, match="no usable preference pairs .*'identical chosen and rejected': 1"
    ):
        load(only_identical)


# --------------------------------------------------------------------------- tokens, truncation, audit


def test_pair_tokens_are_the_sft_labels_of_each_conversation(tiny_tokenizer):
    prompt = [msg("user", "王伟出生于哪一年？")]
    pair = {
        "prompt": prompt,
        "chosen": msg("assistant", "1987年。"),
        "rejected": msg("assistant", "他毕业于北京大学。"),
    }
    ends = EndOfTurn.of(tiny_tokenizer)
    encoded = encode_pair(tiny_tokenizer, pair, 256, ends)
    for side in ("chosen", "rejected"):
        sft = encode_conversation(tiny_tokenizer, [*prompt, pair[side]], 256, ends)
        supervised = [t for t, label in zip(sft["input_ids"], sft["labels"]) if label != IGNORE_INDEX]
        assert encoded["prompt_ids"] == sft["input_ids"][: len(encoded["prompt_ids"])]
        assert encoded[f"{side}_ids"] == supervised  # the answer and its <|im_end|>, as SFT supervises it
    assert encoded["chosen_ids"] != encoded["rejected_ids"]  # control: the two sides differ
    assert encoded["chosen_closed"] and encoded["rejected_closed"] and encoded["cut"] == "" == encoded["drop"]


def test_truncation_keeps_the_prompt_and_reports_one_sided_cuts(tmp_path, tiny_tokenizer):
    records = [
        {"prompt": "q", "chosen": "短", "rejected": "很长的回答" * 30},  # only rejected is cut
        {"prompt": "q", "chosen": "很长的回答" * 30, "rejected": "很长的回答。" * 30},  # both cut
        {"prompt": "很长的问题" * 40, "chosen": "a", "rejected": "b"},  # no room for any answer
        PAIR,
    ]
    args = PreferenceDataArguments(
        train_files=[write_jsonl(tmp_path / "cut.jsonl", records)], audit_samples=2
    )
    pairs = load_preference_pairs(args)
    data = build_preference_datasets(pairs, tiny_tokenizer, args, max_length=48)
    audit = data.audit
    assert (audit.pairs_in, audit.kept, dict(audit.dropped)) == (
        4,
        3,
        {"prompt longer than max_length=48": 1},
    )
    assert dict(audit.cut) == {"rejected": 1, "both": 1}
    for row in data.train:
        assert len(row["prompt_ids"]) + max(len(row["chosen_ids"]), len(row["rejected_ids"])) <= 48
        assert tiny_tokenizer.decode(row["prompt_ids"]).endswith("<|im_start|>assistant\n")  # prompt whole
    text = audit.render()
    assert "both 1, chosen only 0, rejected only 1" in text
    assert "WARNING 1 pairs cut on one side only" in text
    assert "answers ending in an end-of-turn token: chosen 2/3, rejected 1/3" in text
    assert text.count("chosen: <|im_start|>user\n") == 2 and "<|im_start|>assistant\n⟦" in text
    audit.check()  # 3 pairs left: fine
    nothing = PreferenceDataArguments(train_files=[write_jsonl(tmp_path / "long.jsonl", records[2:3])])
    with pytest.raises(PreferenceAuditError, match="no trainable pair: all 1 dropped"):
        build_preference_datasets(load_preference_pairs(nothing), tiny_tokenizer, nothing, 48).audit.check()


def test_validation_split_holds_out_whole_records(tmp_path):
    records = [{"prompt": f"q{i}", "chosen": "a", "rejected": "b"} for i in range(20)]
    path = write_jsonl(tmp_path / "many.jsonl", records)
    pairs = load_preference_pairs(
        PreferenceDataArguments(train_files=[path], mix_weights=[2.0], validation_split=0.1)
    )
    held = set(pairs.eval["record"])
    assert len(held) == 2 == len(pairs.eval) and len(pairs.train) == 36
    assert not held & set(pairs.train["record"])


def test_special_token_strings_in_a_pair_stay_plain_text(tiny_tokenizer):
    im_start = tiny_tokenizer.convert_tokens_to_ids("<|im_start|>")
    pair = {
        "prompt": [msg("user", "写出 <|im_start|> 这个字符串")],
        "chosen": msg("assistant", "<|im_start|>"),
        "rejected": msg("assistant", "不知道"),
    }
    ends, specials = EndOfTurn.of(tiny_tokenizer), special_texts(tiny_tokenizer)
    plain = encode_pair(tiny_tokenizer, pair, 256, ends, specials)
    assert im_start not in plain["chosen_ids"]  # the typed string is text, not a control token
    assert plain["prompt_ids"].count(im_start) == 2  # control: the template's own user + assistant turns
    injected = encode_pair(tiny_tokenizer, pair, 256, ends)  # negative control: without specials
    assert im_start in injected["chosen_ids"]
