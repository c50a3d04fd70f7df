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
    row_tools,
    template_messages,
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
        "skipped": {},
        "ignored_fields": {},
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
    assert template_messages(first) == [
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
    path = write_jsonl(tmp_path / "r2.jsonl", [{"messages": [{"role": "robot", "content": "x"}]}])
    with pytest.raises(ChatDataError, match=r"messages\[0\]\.role: unknown role 'robot'"):
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


# --------------------------------------------------------------------------- tools


def tool_schema(name: str) -> dict:
    return {
        "name": name,
        "description": f"{name} a thing",
        "parameters": {"type": "object", "properties": {}},
    }


def test_glaive_sharegpt_tool_format_real_file(shared_data):
    """LLaMA-Factory's tool format: function_call turns are assistant tool calls, observation turns
    tool results, the tools field (a JSON string) the conversation's tools: nothing skipped or lost."""
    path = str(shared_data / "sft/glaive_toolcall_en_demo.json")
    chat = load_conversations([path])
    assert chat.stats.files[path] == {
        "format": "sharegpt",
        "records": 300,
        "kept": 300,
        "skipped": {},
        "ignored_fields": {},
    }
    raw = json.loads(Path(path).read_text(encoding="utf-8"))
    by_record = {r["record"]: r for r in chat.dataset}
    calls = results = with_tools = 0
    for i, src in enumerate(raw, 1):
        row = by_record[f"{path} record {i}"]
        tools = json.loads(src["tools"])
        assert row_tools(row["tools"]) == ([{"type": "function", "function": t} for t in tools] or None)
        with_tools += bool(tools)
        for turn, m in zip(src["conversations"], template_messages(row["messages"])):
            if turn["from"] == "function_call":
                assert m == {
                    "role": "assistant",
                    "content": "",
                    "loss_weight": 1.0,
                    "tool_calls": [{"type": "function", "function": json.loads(turn["value"])}],
                }
                calls += 1
            elif turn["from"] == "observation":
                assert m == {"role": "tool", "content": turn["value"], "loss_weight": 1.0}
                results += 1
            else:
                assert m["content"] == turn["value"]
    assert (calls, results, with_tools) == (211, 211, 191)


OPENAI_TOOLS = [{"type": "function", "function": tool_schema("get_weather")}, tool_schema("get_time")]


def test_openai_tool_calls_and_tool_results(tmp_path):
    """OpenAI messages: assistant tool_calls (arguments as a JSON string, content null, parallel
    calls), role tool results with tool_call_id, a tools list of wrapped and bare schemas."""
    record = {
        "tools": OPENAI_TOOLS,
        "messages": [
            {"role": "user", "content": "Weather and time in Paris?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    },
                    {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 21}'},
            {"role": "tool", "tool_call_id": "call_2", "content": "12:00"},
            {"role": "assistant", "content": "21 degrees, and it is noon."},
        ],
    }
    chat = load_conversations([write_jsonl(tmp_path / "o.jsonl", [record])])
    row = chat.dataset[0]
    assert row_tools(row["tools"]) == [
        OPENAI_TOOLS[0],
        {"type": "function", "function": tool_schema("get_time")},
    ]
    assert template_messages(row["messages"]) == [
        {"role": "user", "content": "Weather and time in Paris?", "loss_weight": 1.0},
        {
            "role": "assistant",
            "content": "",
            "loss_weight": 1.0,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": {"city": "Paris"}},
                },
                {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": {}}},
            ],
        },
        {"role": "tool", "content": '{"temp": 21}', "loss_weight": 1.0, "tool_call_id": "call_1"},
        {"role": "tool", "content": "12:00", "loss_weight": 1.0, "tool_call_id": "call_2"},
        {"role": "assistant", "content": "21 degrees, and it is noon.", "loss_weight": 1.0},
    ]


def test_trailing_tool_results_are_trimmed_and_turns_count_whole_exchanges(tmp_path):
    call = {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "f", "arguments": {}}}]}
    ask = {"role": "user", "content": "q"}
    record = {
        "messages": [ask, call, {"role": "tool", "content": "r"}, {"role": "assistant", "content": "a"}]
    }
    trailing = {"messages": [ask, call, {"role": "tool", "content": "r"}]}
    chat = load_conversations([write_jsonl(tmp_path / "t.jsonl", [record, trailing])])
    by_record = {r["record"]: r["messages"] for r in chat.dataset}
    assert roles(by_record[f"{tmp_path}/t.jsonl:2"]) == ["user", "assistant"]  # the call stays: an answer
    assert chat.stats.trimmed_trailing_tool == 1
    two = template_messages(by_record[f"{tmp_path}/t.jsonl:1"]) + [ask, {"role": "assistant", "content": "b"}]
    assert roles(first_turns(two, 1)) == ["user", "assistant", "tool", "assistant"]


@pytest.mark.parametrize(
    "messages, match, reason",
    [
        (
            [{"role": "user", "content": "q"}, {"role": "tool", "content": "r"}],
            r"roles out of order: message 1 is 'tool' after 'user'",
            "roles out of order",
        ),
        (
            [
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": "a"},
                {"role": "tool", "content": "r"},
            ],
            r"roles out of order: message 2 is 'tool' after 'assistant'.*tool result follows the assistant's tool call",
            "roles out of order",
        ),
        (
            [
                {"role": "user", "content": "q"},
                {"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "{oops"}}]},
            ],
            r"messages\[1\]\.tool_calls\[0\]\.arguments: not valid JSON",
            "bad tool call",
        ),
        (
            [
                {"role": "user", "content": "q"},
                {"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "[1]"}}]},
            ],
            r"messages\[1\]\.tool_calls\[0\]\.arguments must be a JSON object, got list",
            "bad tool call",
        ),
        (
            [
                {"role": "user", "content": "q"},
                {"role": "assistant", "tool_calls": [{"function": {"arguments": {}}}]},
            ],
            r"messages\[1\]\.tool_calls\[0\]: a tool call needs a function name",
            "bad tool call",
        ),
        (
            [{"role": "user", "content": "q", "tool_calls": [{"function": {"name": "f"}}]}],
            r"messages\[0\]: only assistant messages make tool_calls",
            "bad tool call",
        ),
    ],
)
def test_bad_tool_messages_name_record_and_field(tmp_path, messages, match, reason):
    path = write_jsonl(tmp_path / "b.jsonl", [GOOD, {"messages": messages}])
    with pytest.raises(ChatDataError, match=r"b\.jsonl:2: " + match):
        load_conversations([path])
    chat = load_conversations([path], LoadOptions(skip_invalid=True))
    assert chat.stats.files[path]["skipped"] == {f"invalid: {reason}": 1} and len(chat.dataset) == 1


def test_bad_tools_and_function_call_values(tmp_path):
    sharegpt = [{"from": "human", "value": "q"}, {"from": "function_call", "value": "not json"}]
    cases = [
        ({"conversations": sharegpt}, r"conversations\[1\]\.value: not valid JSON"),
        ({**GOOD, "tools": "[{broken"}, r"tools: not valid JSON"),
        ({**GOOD, "tools": {"name": "f"}}, r"tools must be a list of function schemas"),
        ({**GOOD, "tools": [{"description": "no name"}]}, r"tools\[0\]: a function schema needs a name"),
    ]
    for i, (record, match) in enumerate(cases):
        path = write_jsonl(tmp_path / f"t{i}.jsonl", [record])
        with pytest.raises(ChatDataError, match=r"t\d\.jsonl:1: " + match):
            load_conversations([path])


# --------------------------------------------------------------------------- nothing dropped in silence


def test_unused_fields_are_counted_per_file_and_warned(tmp_path, caplog):
    records = [
        {"id": 1, **GOOD},
        {
            "id": 2,
            "source": "web",
            "messages": [
                {"role": "user", "content": "q", "name": "ann"},
                {"role": "assistant", "content": "a"},
            ],
        },
    ]
    plain = {"prompt": "1+1=", "completion": "2", "tools": [tool_schema("calc")]}  # no template: tools unused
    chat_pc = {
        "prompt": [{"role": "user", "content": "q", "weight": 2}],
        "completion": [{"role": "assistant", "content": "a"}],
    }
    path, other = (
        write_jsonl(tmp_path / "m.jsonl", records),
        write_jsonl(tmp_path / "p.jsonl", [plain, chat_pc]),
    )
    with caplog.at_level("WARNING", logger="mini_lm.data.chat"):
        chat = load_conversations([path, other])
    assert chat.stats.files[path]["ignored_fields"] == {"id": 2, "source": 1, "messages[].name": 1}
    assert chat.stats.files[other]["ignored_fields"] == {"tools": 1, "prompt[].weight": 1}
    assert chat.stats.ignored_fields == {
        "id": 2,
        "source": 1,
        "messages[].name": 1,
        "tools": 1,
        "prompt[].weight": 1,
    }
    assert f"{path}: fields the messages format does not use, ignored (records): id: 2" in caplog.text
    assert (
        f"{other}: fields the prompt_completion format does not use, ignored (records): tools: 1"
        in caplog.text
    )


def test_skipped_records_reported_per_file_and_reason(tmp_path, caplog):
    bad = {"messages": [{"role": "robot", "content": "x"}]}
    many = write_jsonl(
        tmp_path / "many.jsonl", [GOOD] * 10 + [bad] * 2 + [{"messages": [{"role": "user", "content": "q"}]}]
    )
    few = write_jsonl(tmp_path / "few.jsonl", [GOOD] * 200 + [bad])
    with caplog.at_level("INFO", logger="mini_lm.data.chat"):
        chat = load_conversations([many, few], LoadOptions(skip_invalid=True))
    assert chat.stats.files[many]["skipped"] == {"invalid: unknown role": 2, "no assistant turn": 1}
    assert chat.stats.files[few]["skipped"] == {"invalid: unknown role": 1}
    assert chat.stats.skipped == {"invalid: unknown role": 3, "no assistant turn": 1}
    levels = {
        r.getMessage().split(":")[0]: r.levelname for r in caplog.records if "skipped" in r.getMessage()
    }
    assert levels == {many: "WARNING", few: "INFO"}  # 3 of 13 is above the threshold, 1 of 201 is not
    assert (
        f"{many}: skipped 3 of 13 records (invalid: unknown role: 2, no assistant turn: 1); first 'unknown role': {many}:11: messages[0].role: unknown role 'robot'"
        in caplog.text
    )


# --------------------------------------------------------------------------- prompt-completion and text


def test_prompt_completion_and_text_records_mix_with_chat_formats(tmp_path):
    conversational = {
        "prompt": [
            {"role": "system", "content": "s"},
            {"role": "user", "content": "q1"},
            {"role": "assistant", "content": "a1"},
            {"role": "user", "content": "q2"},
        ],
        "completion": [{"role": "assistant", "content": "a2"}],
    }
    records = [
        GOOD,
        {"prompt": "1+1=", "completion": "2"},
        {"text": "Plain text <|im_start|>."},
        conversational,
        {"text": "  "},
    ]
    path = write_jsonl(tmp_path / "mixed.jsonl", records)
    alpaca = write_jsonl(tmp_path / "a.jsonl", [{"instruction": "q", "output": "a"}])
    chat = load_conversations([path, alpaca], LoadOptions(system_prompt="sys"))
    info = chat.stats.files[path]
    assert info["format"] == "messages+prompt_completion+text" and info["skipped"] == {"empty text": 1}
    by_record = {r["record"]: template_messages(r["messages"]) for r in chat.dataset}
    weights = lambda ms: [(m["role"], m["content"], m["loss_weight"]) for m in ms]  # noqa: E731
    assert weights(by_record[f"{path}:2"]) == [("text", "1+1=", 0.0), ("text", "2", 1.0)]  # no system prompt
    assert weights(by_record[f"{path}:3"]) == [("text", "Plain text <|im_start|>.", 1.0)]
    assert weights(by_record[f"{path}:4"]) == [
        ("system", "s", 0.0),
        ("user", "q1", 0.0),
        ("assistant", "a1", 0.0),
        ("user", "q2", 0.0),
        ("assistant", "a2", 1.0),
    ]
    assert weights(by_record[f"{alpaca}:1"])[0] == ("system", "sys", 1.0)
    with pytest.raises(
        ChatDataError,
        match=r"b\.jsonl:1: prompt and completion must both be strings or both be message lists",
    ):
        load_conversations(
            [
                write_jsonl(
                    tmp_path / "b.jsonl",
                    [{"prompt": "q", "completion": [{"role": "assistant", "content": "a"}]}],
                )
            ]
        )


def test_utf8_bom_is_stripped(tmp_path):
    for name in ("bom.jsonl", "bom.json"):
        body = json.dumps(GOOD if name.endswith("l") else [GOOD])
        (tmp_path / name).write_bytes(b"\xef\xbb\xbf" + body.encode("utf-8"))
        chat = load_conversations([str(tmp_path / name)])
        assert chat.dataset[0]["messages"][0]["content"] == "hi"
