"""Chat data loading: the three formats on the real shared files, placeholders, mixing, and each kind
of bad input failing with file, line/record and field (or, with skip_invalid, a counted skip)."""

import json
import random
from collections import Counter
from pathlib import Path

import pytest

from mini_lm.data.chat import (
    ChatDataError,
    LoadOptions,
    apply_weight,
    fill_placeholders,
    first_turns,
    load_conversations,
)


def roles(messages):
    return [m["role"] for m in messages]


def write_jsonl(path: Path, records) -> str:
    path.write_text(
        "".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in records),
        encoding="utf-8",
    )
    return str(path)


GOOD = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}


# --------------------------------------------------------------------------- real files


def test_alpaca_real_file(shared_data):
    chat = load_conversations([str(shared_data / "sft/alpaca_zh_demo.json")])
    assert chat.stats.files[str(shared_data / "sft/alpaca_zh_demo.json")] == {
        "format": "alpaca",
        "records": 1000,
        "kept": 1000,
    }
    raw = json.loads((shared_data / "sft/alpaca_zh_demo.json").read_text(encoding="utf-8"))
    by_record = {r["record"]: r["messages"] for r in chat.dataset}
    for i in (1, 2, 500, 1000):  # record numbers are 1-based
        src, messages = raw[i - 1], by_record[f"{shared_data}/sft/alpaca_zh_demo.json record {i}"]
        assert roles(messages) == ["user", "assistant"]
        expected_prompt = src["instruction"] + (f"\n{src['input']}" if src["input"] else "")
        assert messages[0]["content"] == expected_prompt and messages[1]["content"] == src["output"]
    with_input = [r for r in raw if r["input"]]
    assert len(with_input) == 139  # instruction + "\n" + input for these


def test_sharegpt_real_file_with_330_message_conversation(shared_data):
    path = str(shared_data / "sft/sharegpt_zh_1k.jsonl")
    chat = load_conversations([path])
    assert chat.stats.files[path]["records"] == 1000
    assert chat.stats.skipped == {"no assistant turn": 1}  # line 781: a lone user message
    assert chat.stats.trimmed_trailing_user == 7  # odd-length conversations end on an unanswered user turn
    assert chat.stats.empty_user_turns == 17  # line 59 has empty user turns: kept, counted
    by_record = {r["record"]: r["messages"] for r in chat.dataset}
    longest = by_record[f"{path}:10"]
    assert len(longest) == 330 and roles(longest) == ["user", "assistant"] * 165
    raw = json.loads(Path(path).read_text(encoding="utf-8").splitlines()[9])["conversations"]
    assert [m["content"] for m in longest] == [m["value"] for m in raw]
    assert roles(by_record[f"{path}:119"]) == ["user", "assistant"]  # "hgh" -> trailing user trimmed


def test_messages_with_content_parts_real_file(shared_data):
    path = str(shared_data / "sft/v1_sft_demo.jsonl")
    chat = load_conversations([path], LoadOptions(placeholders={"name": "MiniLM", "author": "mini_lm"}))
    assert len(chat.dataset) == 500 and chat.stats.files[path]["format"] == "messages"
    first = {r["record"]: r["messages"] for r in chat.dataset}[f"{path}:1"]
    assert first == [
        {"role": "user", "content": "hi", "loss_weight": 0.0},
        {
            "role": "assistant",
            "content": "Hello! I am MiniLM, an AI assistant developed by mini_lm. "
            "How can I assist you today?",
            "loss_weight": 1.0,
        },
    ]
    assert not chat.stats.unfilled_placeholders


def test_identity_placeholders_filled_or_counted(shared_data):
    path = str(shared_data / "sft/identity.json")
    filled = load_conversations([path], LoadOptions(placeholders={"name": "MiniLM", "author": "Ada"}))
    answers = [r["messages"][-1]["content"] for r in filled.dataset]
    assert len(answers) == 91 and not any("{{" in a for a in answers)
    assert sum("MiniLM" in a for a in answers) >= 70 and sum("Ada" in a for a in answers) >= 50
    unfilled = load_conversations([path])
    assert unfilled.stats.unfilled_placeholders == {"name": 77, "author": 60}  # counted and reported


def test_placeholders_leave_code_braces_alone():
    unfilled = Counter()
    text = "I am {{name}}. In Django: {{ form.as_p }} and {{unknown}}"
    assert (
        fill_placeholders(text, {"name": "MiniLM"}, unfilled)
        == "I am MiniLM. In Django: {{ form.as_p }} and {{unknown}}"
    )
    assert unfilled == {"unknown": 1}


# --------------------------------------------------------------------------- options


def test_mix_weights_repeat_and_subsample(shared_data):
    identity, alpaca = str(shared_data / "sft/identity.json"), str(shared_data / "sft/alpaca_zh_demo.json")
    chat = load_conversations([identity, alpaca], weights=[3.0, 0.25], seed=1)
    sources = chat.dataset["source"]
    assert sources.count(identity) == 273 and sources.count(alpaca) == 250
    assert chat.stats.mix[identity] == {"conversations": 91, "weight": 3.0, "samples": 273}
    alpaca_records = [r for r, s in zip(chat.dataset["record"], sources) if s == alpaca]
    assert len(set(alpaca_records)) == 250  # a fraction samples without repeats
    assert apply_weight([1, 2], 0.0, random.Random(0)) == []
    with pytest.raises(ChatDataError, match="mix_weights has 3 entries for 2 train_files"):
        load_conversations([identity, alpaca], weights=[1, 1, 1])


def test_alpaca_system_and_history_and_system_prompt(tmp_path):
    path = write_jsonl(
        tmp_path / "a.jsonl",
        [
            {
                "instruction": "q2",
                "input": "ctx",
                "output": "a2",
                "system": "be brief",
                "history": [["q1", "a1"]],
            },
            {"instruction": "q", "output": "a"},
        ],
    )
    rows = load_conversations([path], LoadOptions(system_prompt="default system"), seed=0).dataset
    by_record = {r["record"]: r["messages"] for r in rows}
    assert [(m["role"], m["content"]) for m in by_record[f"{path}:1"]] == [
        ("system", "be brief"),
        ("user", "q1"),
        ("assistant", "a1"),
        ("user", "q2\nctx"),
        ("assistant", "a2"),
    ]
    assert [(m["role"], m["content"]) for m in by_record[f"{path}:2"]] == [
        ("system", "default system"),
        ("user", "q"),
        ("assistant", "a"),
    ]


def test_sharegpt_system_roles_and_explicit_format(tmp_path):
    path = write_jsonl(
        tmp_path / "s.jsonl",
        [
            {
                "system": "sys",
                "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}],
            }
        ],
    )
    rows = load_conversations([path], LoadOptions(formats=["sharegpt"])).dataset
    assert roles(rows[0]["messages"]) == ["system", "user", "assistant"]
    with pytest.raises(ChatDataError, match="missing field 'messages'"):
        load_conversations([path], LoadOptions(formats=["messages"]))


def test_first_turns():
    msgs = [{"role": r, "content": r} for r in ["system", "user", "assistant", "user", "assistant"]]
    assert roles(first_turns(msgs, 1)) == ["system", "user", "assistant"]
    assert first_turns(msgs, None) == msgs


# --------------------------------------------------------------------------- bad input, one test each


def test_malformed_json_line_names_file_and_line(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [GOOD, GOOD, '{"messages": [}'])
    with pytest.raises(ChatDataError, match=r"bad\.jsonl:3: not valid JSON"):
        load_conversations([path])


def test_malformed_json_file_names_line(tmp_path):
    (tmp_path / "bad.json").write_text(
        '[\n  {"instruction": "a", "output": "b"},\n  {"instruction": oops}\n]'
    )
    with pytest.raises(ChatDataError, match=r"bad\.json:3: not valid JSON"):
        load_conversations([str(tmp_path / "bad.json")])


def test_missing_field_names_record_and_field(tmp_path):
    path = write_jsonl(
        tmp_path / "m.jsonl", [GOOD, {"messages": [{"role": "user"}, {"role": "assistant", "content": "x"}]}]
    )
    with pytest.raises(ChatDataError, match=r"m\.jsonl:2: messages\[0\]: missing field 'content'"):
        load_conversations([path])
    alpaca = write_jsonl(tmp_path / "a.jsonl", [{"instruction": "q", "output": "a"}, {"instruction": "q"}])
    with pytest.raises(ChatDataError, match=r"a\.jsonl:2: missing field 'output' \(alpaca format"):
        load_conversations([alpaca])


def test_empty_assistant_content(tmp_path):
    path = write_jsonl(
        tmp_path / "e.jsonl",
        [{"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "  "}]}],
    )
    with pytest.raises(ChatDataError, match=r"e\.jsonl:1: message 1: empty assistant content"):
        load_conversations([path])


def test_roles_out_of_order(tmp_path):
    path = write_jsonl(
        tmp_path / "o.jsonl",
        [
            GOOD,
            {
                "messages": [
                    {"role": "user", "content": "a"},
                    {"role": "user", "content": "b"},
                    {"role": "assistant", "content": "c"},
                ]
            },
        ],
    )
    with pytest.raises(
        ChatDataError, match=r"o\.jsonl:2: roles out of order: message 1 is 'user' after 'user'"
    ):
        load_conversations([path])
    first = write_jsonl(tmp_path / "f.jsonl", [{"messages": [{"role": "assistant", "content": "a"}]}])
    with pytest.raises(ChatDataError, match="message 0 is 'assistant' as the first message"):
        load_conversations([first])


def test_unknown_role(tmp_path):
    path = write_jsonl(tmp_path / "r.jsonl", [{"conversations": [{"from": "bot", "value": "x"}]}])
    with pytest.raises(ChatDataError, match=r"r\.jsonl:1: conversations\[0\]\.from: unknown role 'bot'"):
        load_conversations([path])
    path = write_jsonl(tmp_path / "r2.jsonl", [{"messages": [{"role": "tool", "content": "x"}]}])
    with pytest.raises(ChatDataError, match=r"messages\[0\]\.role: unknown role 'tool'"):
        load_conversations([path])


def test_non_string_content(tmp_path):
    path = write_jsonl(
        tmp_path / "n.jsonl",
        [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": {"text": "a"}}]}],
    )
    with pytest.raises(ChatDataError, match=r"n\.jsonl:1: messages\[1\]\.content: content must be a string"):
        load_conversations([path])
    image = write_jsonl(
        tmp_path / "i.jsonl",
        [
            {
                "messages": [
                    {"role": "user", "content": [{"type": "image", "url": "x.png"}]},
                    {"role": "assistant", "content": "a"},
                ]
            }
        ],
    )
    with pytest.raises(ChatDataError, match=r"messages\[0\]\.content\[0\]: only text parts are supported"):
        load_conversations([image])


def test_skip_invalid_counts_instead_of_failing(tmp_path):
    path = write_jsonl(
        tmp_path / "mixed.jsonl",
        [
            GOOD,
            {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": ""}]},
            {"messages": [{"role": "robot", "content": "q"}]},
            {"messages": [{"role": "user", "content": "only a question"}]},
            GOOD,
        ],
    )
    chat = load_conversations([path], LoadOptions(skip_invalid=True))
    assert len(chat.dataset) == 2
    assert chat.stats.skipped == {
        "invalid: empty assistant content": 1,
        "invalid: unknown role": 1,
        "no assistant turn": 1,
    }


def test_nothing_usable_is_an_error(tmp_path):
    path = write_jsonl(tmp_path / "q.jsonl", [{"messages": [{"role": "user", "content": "question only"}]}])
    with pytest.raises(ChatDataError, match="no usable conversations.*no assistant turn"):
        load_conversations([path])
    with pytest.raises(ChatDataError, match="SFT data path not found"):
        load_conversations([str(tmp_path / "missing.jsonl")])
    (tmp_path / "t.txt").write_text("x")
    with pytest.raises(ChatDataError, match="must be .json or .jsonl"):
        load_conversations([str(tmp_path / "t.txt")])


def test_validation_split_holds_out_every_repeat(shared_data):
    from mini_lm.config import SFTDataArguments
    from mini_lm.data.sft import load_sft_conversations

    args = SFTDataArguments(
        train_files=[str(shared_data / "sft/identity.json")], mix_weights=[3.0], validation_split=0.1
    )
    chats = load_sft_conversations(args, seed=0)
    train, held = chats.train.dataset["record"], chats.eval.dataset["record"]
    assert len(held) == len(set(held)) == 9 and not set(held) & set(train)
    assert len(train) == 3 * (91 - 9)
