"""Tool calling end to end: a tiny from-scratch tool SFT (recipes/sft.py on OpenAI-style and
LLaMA-Factory tool data), then the served model through the real `openai` client with
``tools=[...]``: a well-formed call comes back as ``tool_calls``, a plain answer and a malformed call
as content. The model's output is controlled by what it was trained on (it memorises its chats)."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from mini_lm.generation import GenerationSettings, generate, load_for_generation, render_chat_prompt
from mini_lm.serving import ServeLimits, create_app, serve_in_thread
from mini_lm.tool_calls import OPEN, ToolCall, parse_tool_calls, readable

from ..conftest import REPO, run_module_main

MODEL = "tiny-tools"
WEATHER = {
    "name": "get_weather",
    "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
TIME = {
    "name": "get_time",
    "description": "Local time in a timezone",
    "parameters": {"type": "object", "properties": {"timezone": {"type": "string"}}},
}
TOOLS = [{"type": "function", "function": WEATHER}, {"type": "function", "function": TIME}]
ASK_WEATHER = "What is the weather in Paris?"
RESULT, AFTER_RESULT = '{"temp_c": 21}', "It is 21 degrees in Paris."
GREETING, HELLO = "Hello!", "Hello! How can I help you?"
ASK_TIME = "What time is it in Tokyo?"
# trained as plain content: what the model emits when its call goes wrong (broken JSON)
MALFORMED = '<tool_call>\n{"name": "get_time", "arguments": {"timezone": \n</tool_call>'
ASK_ROME = "Weather in Rome?"  # the LLaMA-Factory (ShareGPT) file's call
LIMITS = ServeLimits(max_tokens=96, default_max_tokens=64, max_prompt_tokens=480)


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def openai_records() -> list[dict]:
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
    }
    return [
        {
            "tools": TOOLS,
            "messages": [
                user(ASK_WEATHER),
                {"role": "assistant", "content": None, "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "call_1", "content": RESULT},
                {"role": "assistant", "content": AFTER_RESULT},
            ],
        },
        {"tools": TOOLS, "messages": [user(GREETING), {"role": "assistant", "content": HELLO}]},
        {"tools": TOOLS, "messages": [user(ASK_TIME), {"role": "assistant", "content": MALFORMED}]},
    ]


def sharegpt_records() -> list[dict]:
    call = json.dumps({"name": "get_weather", "arguments": {"city": "Rome"}})
    turns = [
        {"from": "human", "value": ASK_ROME},
        {"from": "function_call", "value": call},
        {"from": "observation", "value": '{"temp_c": 25}'},
        {"from": "gpt", "value": "It is 25 degrees in Rome."},
    ]
    return [{"conversations": turns, "tools": json.dumps([WEATHER, TIME])}]  # bare schemas, as a JSON string


@pytest.fixture(scope="module")
def tool_sft(tmp_path_factory):
    """(model dir, logged losses) of recipes/sft.py from scratch on the two tool files."""
    folder = tmp_path_factory.mktemp("tool_sft")
    (folder / "openai.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in openai_records()), encoding="utf-8"
    )
    (folder / "sharegpt.json").write_text(json.dumps(sharegpt_records()), encoding="utf-8")
    out = folder / "run"
    argv = ["--config", REPO / "recipes/configs/qwen2/sft_tiny_tools.yaml"]
    argv += ["--train_files", folder / "openai.jsonl", folder / "sharegpt.json", "--mix_weights", "8", "8"]
    argv += ["--hidden_size", "64", "--num_hidden_layers", "2", "--intermediate_size", "128"]
    argv += ["--max_position_embeddings", "512", "--max_length", "480", "--tokenizer_vocab_size", "600"]
    argv += ["--per_device_train_batch_size", "8", "--max_steps", "120", "--warmup_steps", "10"]
    argv += [
        "--lr_scheduler_type",
        "constant_with_warmup",
        "--learning_rate",
        "3e-3",
        "--logging_steps",
        "10",
    ]
    argv += [
        "--eval_strategy",
        "no",
        "--validation_split",
        "0",
        "--save_strategy",
        "no",
        "--disable_tqdm",
        "true",
    ]
    run_module_main(REPO / "recipes/sft.py", [str(a) for a in [*argv, "--output_dir", out]])
    log = json.loads((out / "trainer_state.json").read_text())["log_history"]
    losses = [h["loss"] for h in log if "loss" in h]
    print(
        f"tiny tool SFT: supervised-token loss {losses[0]:.3f} -> {losses[-1]:.3f} over {len(losses) * 10} steps"
    )
    # memorised (80 steps reach 0.12, and then answer Paris with Rome's result): the tests below
    # need exactly the trained answers back
    assert losses[-1] < 0.05, losses
    return out, losses


@pytest.fixture(scope="module")
def tool_model(tool_sft):
    return load_for_generation(str(tool_sft[0]))


@pytest.fixture(scope="module")
def client(tool_model):
    model, tokenizer = tool_model
    with serve_in_thread(create_app(model, tokenizer, MODEL, LIMITS)) as url:
        yield openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120), url


def sent_call(arguments: str) -> dict:
    """An assistant message as a client sends back a call it received."""
    call = {"id": "1", "type": "function", "function": {"name": "f", "arguments": arguments}}
    return {"role": "assistant", "content": None, "tool_calls": [call]}


def ask(client, messages: list[dict], **kwargs):
    return client.chat.completions.create(
        model=MODEL, messages=messages, temperature=0, tools=TOOLS, **kwargs
    )


def test_the_tool_sft_trains_calls_and_its_tokenizer_renders_tools(tool_sft, tool_model):
    out, losses = tool_sft
    _, tokenizer = tool_model
    assert len(losses) == 12 and losses[0] > 2  # from scratch: starts near the vocabulary's entropy
    prompt = render_chat_prompt(tokenizer, [user(ASK_WEATHER)], TOOLS)
    assert prompt.startswith("<|im_start|>system\n# Tools\n") and json.dumps(TOOLS[0]) in prompt


def test_a_call_comes_back_as_tool_calls_and_its_result_is_answered(client, tool_model):
    client, _ = client
    reply = ask(client, [user(ASK_WEATHER)])
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("call-") and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    # the same answer as generating directly: nothing but parsing happened on the way
    model, tokenizer = tool_model
    prompt = render_chat_prompt(tokenizer, [user(ASK_WEATHER)], TOOLS)
    direct = generate(model, tokenizer, [prompt], GenerationSettings(do_sample=False, max_new_tokens=64))[0]
    assert parse_tool_calls(direct.text, {"get_weather"}).calls == [
        ToolCall("get_weather", '{"city": "Paris"}')
    ]
    print("served tool call:", json.dumps({"messages": [user(ASK_WEATHER)], "tools": TOOLS}))
    print("->", json.dumps(reply.model_dump(exclude_none=True)["choices"][0], ensure_ascii=False))
    # the client sends the call back with its result: rendered as in training, answered with content
    back = [user(ASK_WEATHER), choice.message.model_dump(exclude_none=True)]
    back.append({"role": "tool", "tool_call_id": call.id, "content": RESULT})
    answer = ask(client, back).choices[0]
    assert (answer.message.content, answer.finish_reason, answer.message.tool_calls) == (
        AFTER_RESULT,
        "stop",
        None,
    )
    rome = ask(client, [user(ASK_ROME)]).choices[0]  # learnt from the LLaMA-Factory file
    assert json.loads(rome.message.tool_calls[0].function.arguments) == {"city": "Rome"}


def test_plain_answers_and_malformed_calls_come_back_as_content(client):
    client, _ = client
    hello = ask(client, [user(GREETING)]).choices[0]
    assert (hello.message.content, hello.finish_reason, hello.message.tool_calls) == (HELLO, "stop", None)
    broken = ask(client, [user(ASK_TIME)]).choices[0]
    assert (broken.message.content, broken.finish_reason, broken.message.tool_calls) == (
        MALFORMED,
        "stop",
        None,
    )
    # tool_choice none: the tools are context, the answer is never read as a call
    raw = ask(client, [user(ASK_WEATHER)], tool_choice="none").choices[0]
    assert (
        raw.message.tool_calls is None
        and raw.message.content.startswith(OPEN)
        and raw.finish_reason == "stop"
    )
    # cut off inside the call by max_tokens: content, finish_reason length
    cut = ask(client, [user(ASK_WEATHER)], max_tokens=6).choices[0]
    assert cut.finish_reason == "length" and cut.message.tool_calls is None and cut.message.content


def test_tool_requests_the_server_cannot_honour_are_clear_400s(client, served_model):
    client, url = client
    cases = [
        ({"stream": True}, "tools cannot be streamed yet"),
        ({"tool_choice": "required"}, "tool_choice: Input should be 'auto' or 'none'"),
        ({"parallel_tool_calls": False}, "parallel_tool_calls: false is not supported"),
        (
            {"tools": [{"type": "function", "function": {**WEATHER, "strict": True}}]},
            "strict function calling",
        ),
        ({"tools": [TOOLS[0], TOOLS[0]]}, "two functions share a name"),
        (
            {"tools": [{"type": "function", "function": {"name": "x", "parameters": {"a": "\ud800"}}}]},
            "lone surrogate",
        ),
        ({"messages": [{"role": "user", "content": None}]}, "content: required"),
        (
            {"messages": [{"role": "user", "content": "q", "tool_calls": []}]},
            "only assistant messages carry tool calls",
        ),
        ({"messages": [user("q"), sent_call("{x")]}, "arguments: not valid JSON"),
        ({"messages": [user("q"), sent_call("[1]")]}, "arguments must be the JSON text of an object"),
        ({"messages": [user("q"), sent_call('{"a": "\\ud800"}')]}, "lone surrogate"),
    ]
    for change, message in cases:
        body = {"model": MODEL, "messages": [user(ASK_WEATHER)], "tools": TOOLS, **change}
        response = httpx.post(
            f"{url}/v1/chat/completions",
            content=json.dumps(body),
            headers={"content-type": "application/json"},
        )
        assert response.status_code == 400 and message in response.json()["error"]["message"], (
            change,
            response.text,
        )
    # a model whose template ignores tools would never see them: refused, not silently dropped
    model, tokenizer = served_model
    plain = type(tokenizer).from_pretrained(tokenizer.name_or_path)
    plain.chat_template = "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\n' }}{% endfor %}"
    with serve_in_thread(create_app(model, plain, MODEL, LIMITS)) as other:
        response = httpx.post(
            f"{other}/v1/chat/completions", json={"model": MODEL, "messages": [user("q")], "tools": TOOLS}
        )
    assert response.status_code == 400 and response.json()["error"]["param"] == "tools"
    assert "does not render tools" in response.json()["error"]["message"]


def test_parse_tool_calls():
    call = '<tool_call>\n{"name": "f", "arguments": {"x": 1}}\n</tool_call>'
    assert parse_tool_calls(call, {"f"}).calls == [ToolCall("f", '{"x": 1}')]
    two = parse_tool_calls(f"Let me check.\n{call}\n{call.replace('1', '2')}", {"f"})
    assert two.content == "Let me check." and [c.arguments for c in two.calls] == ['{"x": 1}', '{"x": 2}']
    assert (
        parse_tool_calls(call.replace('{"x": 1}', '"{\\"x\\": 3}"'), {"f"}).calls[0].arguments == '{"x": 3}'
    )
    for bad in (call[:-5], call.replace("}}", "}"), call + "\n<tool_call>", call.replace('"x"', "x")):
        assert parse_tool_calls(bad, {"f"}) == parse_tool_calls(bad, {"f"}).__class__(bad, [])
    assert parse_tool_calls(call, {"g"}).calls == []  # a tool the request does not offer: content
    assert (
        readable(ToolCall("get_weather", '{"city": "Paris", "days": 2}'))
        == 'get_weather(city="Paris", days=2)'
    )


def test_chat_shows_calls_readably_and_answers_a_tool_result(tool_model, tmp_path, capsys):
    from mini_lm.commands.chat import ChatSession, load_tools, reply

    model, tokenizer = tool_model
    (tmp_path / "tools.json").write_text(json.dumps([WEATHER, TOOLS[1]]), encoding="utf-8")  # bare + wrapped
    tools = load_tools(str(tmp_path / "tools.json"))
    assert tools == TOOLS
    session, settings = (
        ChatSession(tokenizer, tools=tools),
        GenerationSettings(do_sample=False, max_new_tokens=64),
    )
    reply(model, tokenizer, session, ASK_WEATHER, settings)
    assert '(tool call: get_weather(city="Paris"); answer with /tool RESULT)' in capsys.readouterr().out
    assert session.awaits_tool_result()
    reply(model, tokenizer, session, RESULT, settings, role="tool")
    assert capsys.readouterr().out == f"assistant> {AFTER_RESULT}\n" and not session.awaits_tool_result()
    (tmp_path / "bad.json").write_text('[{"description": "no name"}]', encoding="utf-8")
    with pytest.raises(ValueError, match=r"--tools .*bad\.json: a function schema needs a name"):
        load_tools(str(tmp_path / "bad.json"))
