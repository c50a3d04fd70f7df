"""What a hostile or careless client does to a real uvicorn server on loopback: hang up before a
non-streamed answer (alone, and inside a shared dynamic batch), send numbers, text and headers
that used to reach the model or the response encoder and come back as 500s, and start-up with an
API key that no HTTP client can send."""

from __future__ import annotations

import json
import socket
import threading
import time
from urllib.parse import urlsplit

import httpx
import pytest

from mini_lm.cli import main as cli
from mini_lm.generation import GenerationSettings, generate
from mini_lm.serving import ServeLimits, create_app, serve_in_thread

MODEL = "tiny-chat"


def health(url: str) -> dict:
    return httpx.get(f"{url}/health").json()


def wait_for(url: str, ready, timeout: float = 60.0) -> dict:
    """Poll /health until ``ready(status)``; the last status either way."""
    deadline = time.monotonic() + timeout
    while not ready(status := health(url)) and time.monotonic() < deadline:
        time.sleep(0.02)
    return status


def idle(status: dict) -> bool:
    return status["running"] == 0 and status["queued"] == 0


def open_request(url: str, path: str, body: dict) -> socket.socket:
    """Send a POST on a raw socket and leave it open: closing it is the client hanging up."""
    parts = urlsplit(url)
    payload = json.dumps(body).encode()
    sock = socket.create_connection((parts.hostname, parts.port))
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    )
    sock.sendall(head.encode() + payload)
    return sock


def test_a_non_streamed_request_stops_when_its_client_hangs_up(endless_model, tiny_tokenizer):
    app = create_app(endless_model, tiny_tokenizer, MODEL, ServeLimits(max_tokens=1500))
    body = {"prompt": "王伟", "max_tokens": 1500, "temperature": 0}
    with serve_in_thread(app) as url:
        sock = open_request(url, "/v1/completions", body)
        assert wait_for(url, lambda s: s["running"] == 1)["running"] == 1  # it is generating
        sock.close()  # hang up
        status = wait_for(url, idle, timeout=120)
        assert idle(status), status
        # the endless model runs every generation to max_tokens unless it is stopped
        assert 0 < status["generated_tokens"] < 1500, status
        assert health(url)["status"] == "ok"


def test_a_hang_up_in_a_shared_batch_leaves_the_other_answers_whole(endless_model, tiny_tokenizer):
    """Two greedy requests batched into one forward pass; the first one's client hangs up. The other
    gets the very answer the uncancelled batch gives; only the hung-up row stops early."""
    limits = ServeLimits(max_tokens=200, max_batch_size=2, batch_wait_ms=30_000)  # wait for the pair
    app = create_app(endless_model, tiny_tokenizer, MODEL, limits)
    prompts, tokens = ["王伟", "Na Li works"], 200
    expected = generate(
        endless_model, tiny_tokenizer, prompts, GenerationSettings(do_sample=False, max_new_tokens=tokens)
    )
    with serve_in_thread(app) as url:
        body = {"max_tokens": tokens, "temperature": 0}
        sock = open_request(url, "/v1/completions", {**body, "prompt": prompts[0]})
        wait_for(url, lambda s: s["running"] == 1)  # the worker holds it, waiting for a batch-mate
        replies = []
        other = threading.Thread(
            target=lambda: replies.append(
                httpx.post(f"{url}/v1/completions", json={**body, "prompt": prompts[1]}, timeout=120)
            )
        )
        other.start()
        assert wait_for(url, lambda s: s["running"] == 2)["running"] == 2  # one batch of two
        sock.close()
        other.join(120)
        status = wait_for(url, idle)
    reply = replies[0].json()
    assert replies[0].status_code == 200, reply
    assert reply["choices"][0]["text"] == expected[1].text
    assert reply["usage"]["completion_tokens"] == tokens and reply["choices"][0]["finish_reason"] == "length"
    assert status["batches"] == 1 and status["largest_batch"] == 2, status
    # the survivor's 200 tokens, plus the few the hung-up row made before its stop flag was seen
    assert tokens < status["generated_tokens"] < 2 * tokens, status


def raw_post(url: str, path: str, body: dict, headers: dict | None = None) -> httpx.Response:
    """json.dumps escapes a lone surrogate as \\ud800 (valid JSON) where httpx's json= cannot encode it."""
    content = json.dumps(body).encode()
    return httpx.post(
        f"{url}{path}", content=content, headers={"content-type": "application/json", **(headers or {})}
    )


CHAT = {"messages": [{"role": "user", "content": "你好"}], "max_tokens": 2}
COMPLETION = {"prompt": "王伟", "max_tokens": 2}
LONE = "\ud800"
CLIENT_ERRORS = {  # name: (path, body, status, field, words in the message)
    "lone surrogate in a prompt": (
        "/v1/completions",
        {**COMPLETION, "prompt": f"王伟{LONE}"},
        "prompt",
        "lone surrogate",
    ),
    "lone surrogate in a batch of prompts": (
        "/v1/completions",
        {**COMPLETION, "prompt": ["王伟", LONE]},
        "prompt[1]",
        "lone surrogate",
    ),
    "lone surrogate in a message": (
        "/v1/chat/completions",
        {**CHAT, "messages": [{"role": "user", "content": f"a{LONE}b"}]},
        "messages[0].content",
        "lone surrogate",
    ),
    "lone surrogate in a text part": (
        "/v1/chat/completions",
        {**CHAT, "messages": [{"role": "user", "content": [{"type": "text", "text": LONE}]}]},
        "messages[0].content[0].text",
        "lone surrogate",
    ),
    "lone surrogate in a stop string": (
        "/v1/completions",
        {**COMPLETION, "stop": [LONE]},
        "stop[0]",
        "lone surrogate",
    ),
    "lone surrogate in the model name": (
        "/v1/chat/completions",
        {**CHAT, "model": LONE},
        "model",
        "lone surrogate",
    ),
}


FOUND_BY_FUZZING = {  # name: (raw body sent to /v1/completions, status before the fix, param, words)
    "temperature 1e-320 (sampling overflows)": (
        b'{"prompt": "a", "temperature": 1e-320}',
        500,
        "temperature",
        "send 0 for greedy decoding or at least 1e-05",
    ),
    "repetition_penalty 1e-320": (
        b'{"prompt": "a", "temperature": 1, "repetition_penalty": 1e-320}',
        500,
        "repetition_penalty",
        "greater than or equal to 0.01",
    ),
    "repetition_penalty Infinity": (
        b'{"prompt": "a", "repetition_penalty": Infinity}',
        200,
        "repetition_penalty",
        "finite number",
    ),
    "temperature NaN": (b'{"prompt": "a", "temperature": NaN}', 400, "temperature", "finite number"),
    "a UTF-8 encoded surrogate": (b'{"prompt": "\xed\xa0\x80"}', 500, "prompt", "lone surrogate"),
    "a key that is no identifier": (b'{"prompt": "a", "max-tokens": 2}', 400, "'max-tokens'", "unsupported"),
    "a 5000-digit number": (
        b'{"prompt": "a", "max_tokens": 1' + b"0" * 5000 + b"}",
        400,
        None,
        "not valid JSON: Exceeds the limit (4300 digits)",
    ),
    "5000-deep nesting": (b"[" * 5000 + b"]" * 5000, 400, None, "not valid JSON: maximum recursion depth"),
    "invalid UTF-8": (
        b'{"prompt": "\xff"}',
        400,
        None,
        "not valid JSON: 'utf-8' codec can't decode byte 0xff",
    ),
}


@pytest.mark.parametrize("case", FOUND_BY_FUZZING)
def test_inputs_found_by_fuzzing_are_400s_that_say_what_is_wrong(server, case):
    """Before: the first three were 500s or a silently accepted infinite penalty; the rest named
    no field (NaN 'should be <= 2', "unsupported field" for 'max-tokens', 'error parsing the body')."""
    body, _before, param, words = FOUND_BY_FUZZING[case]
    response = httpx.post(
        f"{server}/v1/completions", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and words in error["message"], error
    assert "\n" not in error["message"]


@pytest.fixture(scope="module")
def server(served_model):
    model, tokenizer = served_model
    with serve_in_thread(
        create_app(model, tokenizer, MODEL, ServeLimits(max_tokens=16, default_max_tokens=8))
    ) as url:
        yield url


@pytest.mark.parametrize("case", CLIENT_ERRORS)
def test_client_errors_that_were_500s_are_400s_naming_the_field(server, case):
    path, body, field, words = CLIENT_ERRORS[case]
    response = raw_post(server, path, body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == field and words in error["message"] and field in error["message"], error
    assert httpx.post(f"{server}/v1/completions", json=COMPLETION).status_code == 200


def test_a_limit_names_the_field_the_client_sent(server):
    body = {"messages": [{"role": "user", "content": "你好"}], "max_completion_tokens": 17}
    error = httpx.post(f"{server}/v1/chat/completions", json=body).json()["error"]
    assert error["param"] == "max_completion_tokens" and error["message"].startswith(
        "max_completion_tokens=17"
    )
    error = httpx.post(f"{server}/v1/chat/completions", json={**CHAT, "max_tokens": 17}).json()["error"]
    assert error["param"] == "max_tokens" and error["message"].startswith("max_tokens=17 is above")


def test_a_seed_beyond_64_bits_is_400_and_the_edges_still_reproduce(server):
    for path, body in (("/v1/completions", COMPLETION), ("/v1/chat/completions", CHAT)):
        for seed, words in ((2**64, "less than or equal to"), (-(2**63) - 1, "greater than or equal to")):
            response = httpx.post(f"{server}{path}", json={**body, "seed": seed, "temperature": 1})
            assert response.status_code == 400, response.text
            error = response.json()["error"]
            assert error["param"] == "seed" and f"seed: Input should be {words}" in error["message"], error

    def sample(seed):
        body = {"prompt": "王伟", "max_tokens": 8, "temperature": 1.5, "seed": seed}
        return httpx.post(f"{server}/v1/completions", json=body).json()["choices"][0]["text"]

    assert sample(2**64 - 1) == sample(2**64 - 1) and sample(-(2**63)) == sample(-(2**63))


def test_a_non_ascii_authorization_header_is_401(served_model):
    model, tokenizer = served_model
    with serve_in_thread(create_app(model, tokenizer, MODEL, api_key="s3cret")) as url:
        for value in ("Bearer clé".encode("latin-1"), "Bearer 密钥".encode(), b"Bearer \xff\xfe"):
            response = httpx.get(f"{url}/v1/models", headers={"Authorization": value})
            assert response.status_code == 401, response.text
            assert "Authorization" in response.json()["error"]["message"]
        ok = httpx.get(f"{url}/v1/models", headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200


@pytest.mark.parametrize("key", ["clé", "密钥", "two words", "tab\there", "new\nline"])
def test_an_api_key_no_client_can_send_is_refused_at_start_up(served_model, served_model_dir, key, capsys):
    model, tokenizer = served_model
    with pytest.raises(ValueError, match="--api-key"):
        create_app(model, tokenizer, MODEL, api_key=key)
    assert cli(["serve", str(served_model_dir), "--api-key", key]) == 2  # before the model loads
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--api-key" in err and "printable ASCII" in err, err


def test_the_body_limit_reads_only_ascii_digits_as_a_length():
    """str.isdigit() is True for '²' (latin-1 0xb2), and int('²') raises: a 500 for any HTTP server
    that passes such a Content-Length on (h11 happens to refuse it first)."""
    import asyncio

    from mini_lm.serving.errors import BodySizeLimit

    seen = []

    async def app(scope, receive, send):
        seen.append(scope["path"])

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        pass

    for length in ("\xb2", "\u0661", "12"):
        scope = {
            "type": "http",
            "path": f"/{length}",
            "headers": [(b"content-length", length.encode("latin-1", "replace"))],
        }
        asyncio.run(BodySizeLimit(app, max_body_bytes=100)(scope, receive, send))
    assert len(seen) == 3  # passed on to the app, whose server or parser answers 400
