"""The OpenAI-compatible API on a real uvicorn server on loopback, driven by the real `openai`
client (and httpx for raw bodies): answers equal `mini_lm.generation` called directly."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from mini_lm.generation import GenerationSettings, generate, render_chat_prompt
from mini_lm.serving import ServeLimits, create_app, serve_in_thread
from mini_lm.serving.engine import Job

from .conftest import CHATS

MODEL = "tiny-chat"
LIMITS = ServeLimits(
    max_tokens=200, default_max_tokens=24, max_prompt_tokens=100, max_body_bytes=4096, max_rows_per_request=6
)


def greedy(n: int) -> GenerationSettings:
    return GenerationSettings(do_sample=False, max_new_tokens=n)


def client_for(url: str, api_key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=api_key, max_retries=0, timeout=60)


def ask(client, question: str, **kwargs):
    return client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": question}],
        **{"temperature": 0, "max_tokens": 24, **kwargs},
    )


@pytest.fixture(scope="module")
def server(served_model):
    model, tokenizer = served_model
    app = create_app(model, tokenizer, MODEL, LIMITS)
    with serve_in_thread(app) as url:
        yield url


@pytest.fixture(scope="module")
def client(server):
    return client_for(server)


def health(url: str) -> dict:
    return httpx.get(f"{url}/health").json()


def test_models_health_and_page(server, client):
    assert [m.id for m in client.models.list()] == [MODEL]
    assert health(server)["status"] == "ok"
    page = httpx.get(f"{server}/")
    assert page.status_code == 200 and "<title>mini_lm chat</title>" in page.text
    assert httpx.get(f"{server}/static/chat.js").status_code == 200


def test_chat_answers_through_the_generation_path(served_model, client):
    model, tokenizer = served_model
    question, answer = CHATS[0]
    reply = ask(client, question)
    prompt = render_chat_prompt(tokenizer, [{"role": "user", "content": question}])
    expected = generate(model, tokenizer, [prompt], greedy(24))[0]
    choice = reply.choices[0]
    assert choice.message.role == "assistant" and choice.finish_reason == "stop"
    assert choice.message.content == expected.text == answer
    assert reply.usage.prompt_tokens == len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    assert reply.usage.completion_tokens == len(expected.token_ids)
    assert (
        ask(client, CHATS[1][0]).choices[0].message.content == CHATS[1][1]
    )  # another question, another answer


def test_chat_streams_the_same_answer(client):
    question, answer = CHATS[2]
    chunks = list(ask(client, question, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) > 1 and "".join(pieces) == answer
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [
        "stop"
    ]
    assert (
        chunks[-1].choices == []
        and chunks[-1].usage.completion_tokens == ask(client, question).usage.completion_tokens
    )


def test_completions_batch_is_one_forward_batch(served_model, server, client):
    model, tokenizer = served_model
    prompts = ["王伟出生于", "李娜在", "Wei Wang was", "Na Li"]
    before = health(server)
    reply = client.completions.create(model=MODEL, prompt=prompts, temperature=0, max_tokens=12)
    after = health(server)
    assert [c.index for c in reply.choices] == [0, 1, 2, 3]
    assert [c.text for c in reply.choices] == [
        r.text for r in generate(model, tokenizer, prompts, greedy(12))
    ]
    assert len({c.text for c in reply.choices}) == 4
    assert after["batches"] == before["batches"] + 1 and after["largest_batch"] >= 4


def test_n_choices_seed_and_echo(client):
    def sample(seed):
        reply = client.completions.create(
            model=MODEL, prompt="王伟", n=3, seed=seed, temperature=1.5, max_tokens=12
        )
        return [c.text for c in reply.choices]

    first, again, other = sample(7), sample(7), sample(8)
    assert len(first) == 3 and first == again and first != other
    plain = client.completions.create(model=MODEL, prompt="李娜", temperature=0, max_tokens=8).choices[0].text
    echoed = client.completions.create(model=MODEL, prompt="李娜", echo=True, temperature=0, max_tokens=8)
    assert echoed.choices[0].text == "李娜" + plain
    top1 = client.completions.create(
        model=MODEL, prompt="李娜", temperature=1.5, max_tokens=8, extra_body={"top_k": 1}
    )
    assert top1.choices[0].text == plain  # top_k (an extension) reaches generation: top-1 sampling is greedy


def test_completion_stream_is_server_sent_events(served_model, server):
    model, tokenizer = served_model
    body = {"prompt": "Wei Wang was", "max_tokens": 12, "temperature": 0, "stream": True}
    with httpx.stream("POST", f"{server}/v1/completions", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines) and lines[-1] == "data: [DONE]"
    events = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    assert all(e["object"] == "text_completion" for e in events)
    assert (
        "".join(e["choices"][0]["text"] for e in events)
        == generate(model, tokenizer, [body["prompt"]], greedy(12))[0].text
    )
    assert [e["choices"][0]["finish_reason"] for e in events][-1] in ("stop", "length")
    assert all(e["choices"][0]["finish_reason"] is None for e in events[:-1])


def test_stop_strings_cut_plain_and_streamed_answers(client):
    question, answer = CHATS[0]  # 王伟出生于1987年。
    reply = ask(client, question, stop=["1987", "never"])
    assert reply.choices[0].message.content == "王伟出生于" and reply.choices[0].finish_reason == "stop"
    chunks = list(ask(client, question, stop="1987", stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "王伟出生于"
    assert ask(client, question, stop="no such text").choices[0].message.content == answer


OK_CHAT = {"messages": [{"role": "user", "content": "你好"}], "max_tokens": 2}
BAD_REQUESTS = {
    "malformed JSON": (b'{"messages": [{"role": "user"', "not valid JSON"),
    "JSON that is not an object": (b"[1, 2]", "must be a JSON object"),
    "messages not a list": ({"messages": "hi"}, "messages: Input should be a valid list"),
    "content of a wrong type": ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    "unknown role": ({"messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role"),
    "image content": (
        {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
        "messages[0].content",
    ),
    "empty messages": ({"messages": []}, "messages"),
    "max_tokens as a string": ({**OK_CHAT, "max_tokens": "5"}, "max_tokens: Input should be a valid integer"),
    "temperature out of range": ({**OK_CHAT, "temperature": 3.5}, "temperature"),
    "stream not a bool": ({**OK_CHAT, "stream": "yes"}, "stream"),
    "n = 0": ({**OK_CHAT, "n": 0}, "n: Input should be greater than or equal to 1"),
    "unknown field": ({**OK_CHAT, "best_answer": True}, "best_answer: unsupported field"),
    "unsupported penalty": ({**OK_CHAT, "frequency_penalty": 0.5}, "frequency_penalty is not supported"),
    "n > 1 streamed": ({**OK_CHAT, "n": 2, "stream": True}, "n > 1 cannot be streamed"),
}


@pytest.mark.parametrize("case", BAD_REQUESTS)
def test_bad_requests_are_400_and_the_server_keeps_serving(server, case):
    body, expected = BAD_REQUESTS[case]
    send = (
        {"content": body, "headers": {"content-type": "application/json"}}
        if isinstance(body, bytes)
        else {"json": body}
    )
    response = httpx.post(f"{server}/v1/chat/completions", **send)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and expected in error["message"], error
    assert httpx.post(f"{server}/v1/chat/completions", json=OK_CHAT).status_code == 200


def test_completion_prompts_must_be_text(server):
    cases = (([1, 2, 3], "prompt"), ([], "prompt is an empty list"), (None, "prompt"), ("", "empty prompt"))
    for prompt, expected in cases:
        response = httpx.post(f"{server}/v1/completions", json={"prompt": prompt, "max_tokens": 2})
        assert response.status_code == 400 and expected in response.json()["error"]["message"]


def test_limits_are_4xx_and_the_server_keeps_serving(server, client):
    with pytest.raises(openai.BadRequestError, match="limit of 200"):
        client.completions.create(model=MODEL, prompt="王伟", max_tokens=201)
    too_long = httpx.post(f"{server}/v1/completions", json={"prompt": "王伟" * 60, "max_tokens": 2}).json()[
        "error"
    ]
    assert too_long["code"] == "context_length_exceeded" and "at most 100" in too_long["message"]
    no_room = httpx.post(f"{server}/v1/completions", json={"prompt": "王伟" * 45, "max_tokens": 190}).json()[
        "error"
    ]
    assert "context length of 256" in no_room["message"], no_room
    rows = httpx.post(f"{server}/v1/completions", json={"prompt": ["a", "b", "c", "d"], "n": 2})
    assert rows.status_code == 400 and "limit is 6" in rows.json()["error"]["message"]
    big = json.dumps({"prompt": "x" * 5000}).encode()
    declared = httpx.post(
        f"{server}/v1/completions", content=big, headers={"content-type": "application/json"}
    )
    chunked = httpx.post(
        f"{server}/v1/completions",
        content=iter([big[:3000], big[3000:]]),
        headers={"content-type": "application/json"},
    )
    for response in (declared, chunked):
        assert response.status_code == 413 and "limit of 4096 bytes" in response.json()["error"]["message"]
    with pytest.raises(openai.NotFoundError, match="not served here"):
        client.completions.create(model="/etc/passwd", prompt="王伟", max_tokens=2)  # a name, never a path
    assert ask(client, CHATS[3][0]).choices[0].message.content == CHATS[3][1]


def test_default_max_tokens_and_unknown_routes(served_model, server, client):
    reply = client.completions.create(model=MODEL, prompt="Na Li works in Shanghai. " * 4, temperature=0)
    assert reply.usage.completion_tokens <= LIMITS.default_max_tokens
    missing = httpx.get(f"{server}/v1/nothing")
    assert missing.status_code == 404 and "error" in missing.json()


def test_chat_needs_a_chat_template(served_model):
    import copy

    model, tokenizer = served_model
    plain = copy.deepcopy(tokenizer)
    plain.chat_template = None
    with serve_in_thread(create_app(model, plain, MODEL)) as url:
        with pytest.raises(openai.BadRequestError, match="/v1/completions"):
            ask(client_for(url), "你好")
        assert client_for(url).completions.create(model=MODEL, prompt="王伟", max_tokens=3).choices[0].text


def test_api_key(served_model):
    model, tokenizer = served_model
    with serve_in_thread(create_app(model, tokenizer, MODEL, api_key="s3cret")) as url:
        with pytest.raises(openai.AuthenticationError, match="API key"):
            client_for(url, "wrong").models.list()
        assert httpx.get(f"{url}/v1/models").status_code == 401
        assert [m.id for m in client_for(url, "s3cret").models.list()] == [MODEL]
        assert httpx.get(f"{url}/").status_code == 200 and httpx.get(f"{url}/health").status_code == 200


def test_busy_server_answers_429_then_recovers(served_model):
    model, tokenizer = served_model
    app = create_app(model, tokenizer, MODEL, ServeLimits(max_concurrent=1))
    with serve_in_thread(app) as url:
        client = client_for(url)
        started, release = threading.Event(), threading.Event()

        def hold(_piece):  # runs on the generation thread: keeps the one slot busy
            started.set()
            release.wait(60)

        blocker = Job(["王伟"], greedy(4), on_piece=hold)
        app.state.engine.submit(blocker)
        assert started.wait(60)
        with pytest.raises(openai.RateLimitError, match="server busy"):
            ask(client, CHATS[0][0])
        raw = httpx.post(f"{url}/v1/completions", json={"prompt": "王伟", "stream": True})
        assert raw.status_code == 429 and raw.headers["retry-after"] == "1"
        release.set()
        blocker.future.result(60)
        assert ask(client, CHATS[0][0]).choices[0].message.content == CHATS[0][1]


def test_concurrent_requests_are_batched_and_each_gets_its_answer(served_model):
    model, tokenizer = served_model
    app = create_app(model, tokenizer, MODEL, ServeLimits(batch_wait_ms=500, max_batch_size=8))
    with serve_in_thread(app) as url:
        client = client_for(url)

        def chat(i: int) -> str:
            question = CHATS[i % 4][0]
            if i >= 8:  # two streaming requests among them run alone, next to the batches
                return "".join(
                    c.choices[0].delta.content or "" for c in ask(client, question, stream=True) if c.choices
                )
            return ask(client, question).choices[0].message.content

        with ThreadPoolExecutor(10) as pool:
            answers = list(pool.map(chat, range(10)))
        status = health(url)
    assert answers == [CHATS[i % 4][1] for i in range(10)]
    assert status["requests"] == 10 and status["largest_batch"] > 1 and status["batches"] < 10, status


def test_disconnected_stream_stops_generating(endless_model, tiny_tokenizer):
    app = create_app(endless_model, tiny_tokenizer, MODEL, ServeLimits(max_tokens=1500))
    body = {"prompt": "王伟", "max_tokens": 1500, "temperature": 0, "stream": True}
    with serve_in_thread(app) as url:
        with httpx.stream("POST", f"{url}/v1/completions", json=body) as response:
            events = response.iter_lines()
            assert next(events).startswith("data: ")  # generation is under way; now hang up
        deadline = time.monotonic() + 60
        while (status := health(url))["running"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert status["running"] == 0
        assert 0 < status["generated_tokens"] < 1500, status  # cancelled, not run to max_tokens
        full = client_for(url).completions.create(model=MODEL, prompt="王伟", max_tokens=1500, temperature=0)
        assert full.usage.completion_tokens == 1500 and full.choices[0].finish_reason == "length"  # control


def test_a_failing_generation_is_reported_and_the_server_keeps_serving(endless_model, tiny_tokenizer):
    def broken_forward(_module, _args):
        raise RuntimeError("injected fault")

    with serve_in_thread(create_app(endless_model, tiny_tokenizer, MODEL)) as url:
        hook = endless_model.register_forward_pre_hook(broken_forward)
        try:
            failed = httpx.post(f"{url}/v1/completions", json={"prompt": "王伟", "max_tokens": 4})
            with httpx.stream(
                "POST", f"{url}/v1/completions", json={"prompt": "王伟", "stream": True}
            ) as response:
                events = [line for line in response.iter_lines() if line]
        finally:
            hook.remove()
        assert failed.status_code == 500 and "injected fault" in failed.json()["error"]["message"]
        assert (
            response.status_code == 200
            and "injected fault" in json.loads(events[-1].removeprefix("data: "))["error"]["message"]
        )
        assert (
            client_for(url)
            .completions.create(model=MODEL, prompt="王伟", max_tokens=4)
            .usage.completion_tokens
            == 4
        )
        assert health(url)["errors"] == 2


def test_a_gpt2_model_serves_through_the_same_path(tiny_tokenizer):
    import torch

    from mini_lm.config import ModelArguments
    from mini_lm.models import build_model

    torch.manual_seed(0)
    model = build_model(
        ModelArguments(
            model_family="gpt2",
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=64,
        ),
        tiny_tokenizer,
    ).eval()
    prompts = ["王伟", "Na Li"]
    with serve_in_thread(create_app(model, tiny_tokenizer, MODEL)) as url:
        client = client_for(url)
        reply = client.completions.create(model=MODEL, prompt=prompts, temperature=0, max_tokens=6)
        too_long = httpx.post(f"{url}/v1/completions", json={"prompt": "王伟", "max_tokens": 64}).json()[
            "error"
        ]
    assert [c.text for c in reply.choices] == [
        r.text for r in generate(model, tiny_tokenizer, prompts, greedy(6))
    ]
    assert "context length of 64" in too_long["message"]  # GPT-2's n_positions is read too
