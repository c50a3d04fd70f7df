"""A seeded fuzz of the real server on loopback: a few hundred random and malformed requests (wrong
JSON types, huge / negative / NaN / inf numbers, deep nesting, invalid UTF-8, lone surrogates,
wrong content types, odd stop lists, edge n / max_tokens, bad Authorization headers, every route and
method, clients that hang up, bursts past the queue limit, malformed HTTP on a raw socket).

No answer may be a 5xx (checked client-side and, through an ASGI recorder, server-side, where the
answers hung-up clients never read are seen too); afterwards the server answers correctly, its
engine is idle, and its memory is flat. Same SEED -> same requests. MINI_LM_FUZZ_LOG=path.jsonl
writes every request's kind, description, status and error message (for a report).
"""

from __future__ import annotations

import gc
import json
import os
import random
import socket
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx
import psutil

from mini_lm.serving import ServeLimits, create_app, serve_in_thread

from .conftest import CHATS

SEED = 20261212
CASES = 300  # plus the edge sweep, bursts and raw-socket cases (and a warm-up before)
MODEL = "tiny-chat"
KEY = "fuzz-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
LIMITS = ServeLimits(
    max_tokens=8,
    default_max_tokens=4,
    max_prompt_tokens=64,
    max_body_bytes=16_384,
    max_concurrent=6,
    max_rows_per_request=4,
    max_batch_size=4,
)
RSS_BOUND = 24 << 20  # bytes the process (server and client) may grow; measured: +4 to +5 MiB


@dataclass
class Case:
    kind: str
    what: str  # a short description for the log
    method: str = "POST"
    path: str = "/v1/completions"
    headers: dict = field(default_factory=lambda: {"content-type": "application/json", **AUTH})
    content: bytes = b""
    hang_up: bool = False  # the client closes the connection before reading the answer


class Recorder:
    """ASGI wrapper: every status the app sends, and every exception that escapes it."""

    def __init__(self, app):
        self.app, self.statuses, self.crashes = app, Counter(), []

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def recording_send(message):
            if message["type"] == "http.response.start":
                self.statuses[message["status"]] += 1
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        except Exception as err:
            self.crashes.append(f"{scope['method']} {scope['path']}: {err!r}")
            raise


# ---- the generator: values, bodies, headers ----

LONE = "\ud800"


def deep_list(depth: int):
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


def deep_dict(depth: int):
    value: dict = {}
    for _ in range(depth):
        value = {"a": value}
    return value


NASTY = [
    None,
    True,
    False,
    0,
    -1,
    1,
    2**31,
    2**63,
    2**64,
    -(2**64),
    10**100,
    0.5,
    -0.0,
    1e308,
    -1e308,
    5e-324,
    float("nan"),
    float("inf"),
    float("-inf"),
    "",
    " ",
    "x",
    "王伟",
    LONE,
    "\udfff\ud800",
    "a\x00b",
    "\u202e\ufeff",
    "🙂" * 200,
    "a" * 6000,
    [],
    [1],
    ["a"],
    [None],
    [[[]]],
    {},
    {"a": 1},
    {"type": "text", "text": "hi"},
    deep_list(60),
    deep_dict(60),
]
CHAT_FIELDS = [
    "model",
    "messages",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "top_k",
    "repetition_penalty",
    "n",
    "seed",
    "stop",
    "stream",
    "stream_options",
    "user",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "logprobs",
]
COMPLETION_FIELDS = [f for f in CHAT_FIELDS if f not in ("messages", "max_completion_tokens")] + [
    "prompt",
    "echo",
    "suffix",
    "best_of",
]
UNKNOWN_FIELDS = ["tools", "tool_choice", "response_format", "functions", "", "__proto__", LONE, "x" * 300]
EDGES = {
    "max_tokens": [0, 1, 4, 7, 8, 9, 64, 256, -1, 2**63, 2**64, 1.0, "4", True],
    "n": [0, 1, 2, 4, 5, 16, -1, 2**63, 1.5, "2", True],
    "temperature": [0, 0.0, 5e-324, 1e-320, 1e-30, 1e-5, 2, 2.0000001, -0.0, -1e-9, 1e308, "0"],
    "top_p": [0, 1e-30, 1, 1.0000001, -1],
    "top_k": [0, 1, 10**9, 2**63, 2**64, -1],
    "repetition_penalty": [5e-324, 1e-30, 0.01, 100, 1e30, 0, -1, 1e308],
    "seed": [0, -1, 2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1, 10**30, 0.5],
    "max_completion_tokens": [0, 1, 8, 9, 2**64],
}
STOPS = [
    [],
    [""],
    [None],
    [1],
    ["a", "b", "c", "d"],
    ["a", "b", "c", "d", "e"],
    [["a"]],
    {"a": 1},
    "x" * 6000,
    [LONE],
    "\n",
    ["年", "1987"],
    0,
    [{"text": "a"}],
]


def chat_body() -> dict:
    question = CHATS[0][0]
    return {"model": MODEL, "messages": [{"role": "user", "content": question}], "max_tokens": 4}


def completion_body() -> dict:
    return {"model": MODEL, "prompt": "王伟", "max_tokens": 4}


def encode(body) -> bytes:
    return json.dumps(body, allow_nan=True).encode()  # NaN / Infinity, and \ud800 escapes, on purpose


def pick_route(rng: random.Random) -> tuple[str, dict, list[str]]:
    if rng.random() < 0.5:
        return "/v1/chat/completions", chat_body(), CHAT_FIELDS
    return "/v1/completions", completion_body(), COMPLETION_FIELDS


def mutated_body(rng: random.Random) -> Case:
    path, body, fields = pick_route(rng)
    changes = []
    for _ in range(rng.randint(1, 3)):
        name = rng.choice(fields + UNKNOWN_FIELDS[:3] if rng.random() < 0.9 else UNKNOWN_FIELDS)
        if rng.random() < 0.1 and name in body:
            del body[name]
            changes.append(f"-{name}")
            continue
        body[name] = rng.choice(NASTY)
        changes.append(f"{name}={short(body[name])}")
    if rng.random() < 0.2:
        body["stream"] = True
    return Case("mutated body", f"{path} " + ", ".join(changes), path=path, content=encode(body))


def message_case(rng: random.Random) -> Case:
    body = chat_body()
    message = dict(body["messages"][0])
    key = rng.choice(["role", "content", "name", "tool_calls", "content-part", "message"])
    if key == "content-part":
        part = rng.choice(
            [{"type": "text"}, {"type": "image_url", "image_url": {"url": "x"}}, {"type": "text", "text": 5}]
            + [{"type": "text", "text": rng.choice(NASTY)}]
        )
        message["content"] = [part]
    elif key == "message":
        body["messages"] = rng.choice([[rng.choice(NASTY)], [message] * 40, rng.choice(NASTY)])
        return Case(
            "messages",
            f"messages={short(body['messages'])}",
            path="/v1/chat/completions",
            content=encode(body),
        )
    else:
        message[key] = rng.choice(NASTY + ["tool", "function", "USER", "system"])
    body["messages"] = [message]
    return Case("messages", f"message {short(message)}", path="/v1/chat/completions", content=encode(body))


def edge_values(rng: random.Random) -> Case:
    path, body, _ = pick_route(rng)
    name = rng.choice(list(EDGES))
    if name == "max_completion_tokens" and "chat" not in path:
        name = "max_tokens"
    body[name] = rng.choice(EDGES[name])
    if rng.random() < 0.4:  # a second knob: sampling and batching edges together
        other = rng.choice(list(EDGES))
        body[other if other != "max_completion_tokens" or "chat" in path else "n"] = rng.choice(EDGES[other])
    if "prompt" in body and rng.random() < 0.3:
        body["prompt"] = rng.choice([["王伟", "李娜"], ["a"] * 5, [""], "", "王伟" * 40, "王伟" * 80])
    return Case("edge values", f"{path} {short(body)}", path=path, content=encode(body))


def stop_case(rng: random.Random) -> Case:
    path, body, _ = pick_route(rng)
    body["stop"] = rng.choice(STOPS)
    body["stream"] = rng.random() < 0.3
    return Case(
        "stop", f"{path} stop={short(body['stop'])} stream={body['stream']}", path=path, content=encode(body)
    )


def random_json(rng: random.Random, depth: int = 0):
    roll = rng.random()
    if depth > 3 or roll < 0.4:
        return rng.choice(NASTY[:28])
    if roll < 0.7:
        return [random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    keys = CHAT_FIELDS + COMPLETION_FIELDS + UNKNOWN_FIELDS
    return {rng.choice(keys): random_json(rng, depth + 1) for _ in range(rng.randint(0, 5))}


def random_json_case(rng: random.Random) -> Case:
    path, _, _ = pick_route(rng)
    value = random_json(rng)
    return Case("random JSON", f"{path} {short(value)}", path=path, content=encode(value))


RAW_BODIES = {
    "empty": b"",
    "null": b"null",
    "truncated": b'{"prompt": "\xe7\x8e\x8b',
    "invalid UTF-8 in a string": b'{"prompt": "\xff\xfe\xfd", "max_tokens": 2}',
    "overlong UTF-8": b'{"prompt": "\xc0\xaf", "max_tokens": 2}',
    "UTF-8 encoded surrogate": b'{"prompt": "\xed\xa0\x80", "max_tokens": 2}',
    "BOM then JSON": b'\xef\xbb\xbf{"prompt": "a", "max_tokens": 2}',
    "UTF-16 JSON": '{"prompt": "a", "max_tokens": 2}'.encode("utf-16"),
    "NUL in a string": b'{"prompt": "a\x00b", "max_tokens": 2}',
    "lone low surrogate escape": b'{"prompt": "\\udc00", "max_tokens": 2}',
    "escaped surrogate pair (valid)": b'{"prompt": "\\ud83d\\ude42", "max_tokens": 2}',
    "5000-deep array": b"[" * 5000 + b"]" * 5000,
    "3000-deep object": b'{"a":' * 3000 + b"1" + b"}" * 3000,
    "a 5000-digit number": b'{"prompt": "a", "max_tokens": 1' + b"0" * 5000 + b"}",
    "1e999": b'{"prompt": "a", "temperature": 1e999}',
    "-Infinity": b'{"prompt": "a", "top_p": -Infinity}',
    "NaN seed": b'{"prompt": "a", "seed": NaN}',
    "duplicate keys": b'{"prompt": "a", "prompt": 5, "max_tokens": 2}',
    "trailing garbage": b'{"prompt": "a"} trailing',
    "single quotes": b"{'prompt': 'a'}",
    "whitespace only": b" \n\t ",
    "binary": bytes(range(256)),
}


def raw_body(rng: random.Random) -> Case:
    path, _, _ = pick_route(rng)
    name = rng.choice(sorted(RAW_BODIES))
    return Case("raw bytes", f"{path} {name}", path=path, content=RAW_BODIES[name])


CONTENT_TYPES = [
    None,
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "application/json; charset=latin-1",
    "application/json; charset=utf-16",
    "application/vnd.api+json",
    "application/json, text/plain",
    "APPLICATION/JSON",
    "json",
    "application/json; boundary=\xff",
    "é/ü",
]


def content_type_case(rng: random.Random) -> Case:
    path, body, _ = pick_route(rng)
    ctype = rng.choice(CONTENT_TYPES)
    headers = {**AUTH, **({"content-type": ctype.encode("latin-1")} if ctype is not None else {})}
    return Case(
        "content type", f"{path} content-type={ctype!r}", path=path, headers=headers, content=encode(body)
    )


AUTH_HEADERS = [
    None,
    b"",
    b"Bearer",
    b"Bearer ",
    b"bearer " + KEY.encode(),
    b"Basic Zm9vOmJhcg==",
    b"Bearer " + KEY.encode() + b" ",
    b"Bearer " + KEY.encode() + b"x",
    "Bearer clé".encode("latin-1"),
    "Bearer 密钥".encode(),
    b"Bearer \xff\xfe\x80",
    b"Bearer " + b"k" * 8000,
    b"Bearer\t" + KEY.encode(),
]


def auth_case(rng: random.Random) -> Case:
    path, body, _ = pick_route(rng)
    method, path, content = rng.choice([("POST", path, encode(body)), ("GET", "/v1/models", b"")])
    value = rng.choice(AUTH_HEADERS)
    headers = {"content-type": "application/json", **({"Authorization": value} if value is not None else {})}
    return Case(
        "auth header", f"{method} {path} Authorization={short(value)}", method, path, headers, content
    )


PATHS = [
    "/",
    "/health",
    "/static/chat.js",
    "/static/../mini_lm/serving/app.py",
    "/static/%2e%2e/%2e%2e/etc/passwd",
    "/static/nothing.js",
    "/v1/models",
    "/v1/models/tiny-chat",
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/chat/completions/../completions",
    "/openapi.json",
    "/docs",
    "/v1/completions?stream=true&x=%ff",
    "/%ff%fe",
    "/" + "a" * 4000,
]


def route_case(rng: random.Random) -> Case:
    method = rng.choice(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"])
    path = rng.choice(PATHS)
    content = encode(completion_body()) if method in ("POST", "PUT", "PATCH") else b""
    return Case("route/method", f"{method} {path[:60]}", method, path, content=content)


def hang_up_case(rng: random.Random) -> Case:
    path, body, _ = pick_route(rng)
    body.update(max_tokens=8, stream=rng.random() < 0.5, temperature=rng.choice([0, 1.0]))
    return Case("hang-up", f"{path} stream={body['stream']}", path=path, content=encode(body), hang_up=True)


KINDS = [  # (weight, generator)
    (22, mutated_body),
    (10, message_case),
    (14, edge_values),
    (6, stop_case),
    (8, random_json_case),
    (10, raw_body),
    (6, content_type_case),
    (8, auth_case),
    (10, route_case),
    (6, hang_up_case),
]


def generate_cases(seed: int, count: int) -> list[Case]:
    """``count`` random cases of every kind, then each edge value once (chance may miss one)."""
    rng = random.Random(seed)
    weights, makers = zip(*KINDS)
    return [rng.choices(makers, weights)[0](rng) for _ in range(count)] + edge_sweep()


def edge_sweep() -> list[Case]:
    cases = []
    for name, values in EDGES.items():
        for i, value in enumerate(values):
            chat = name == "max_completion_tokens" or i % 2
            path, body = (
                ("/v1/chat/completions", chat_body()) if chat else ("/v1/completions", completion_body())
            )
            body.update({name: value, "temperature": 1.0} if name == "repetition_penalty" else {name: value})
            cases.append(Case("edge sweep", f"{path} {name}={short(value)}", path=path, content=encode(body)))
    return cases


def short(value, limit: int = 70) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 12]}...({len(text)} chars)"


# ---- sending ----


NO_ANSWER = 0  # status recorded when the server closed the connection without answering


def send(client: httpx.Client, url: str, case: Case) -> tuple[int | None, str]:
    """(status, error message or '') — (None, 'hung up') when the client left before the answer."""
    if case.hang_up:
        return hang_up(url, case)
    try:
        response = client.request(
            case.method, f"{url}{case.path}", headers=case.headers, content=case.content
        )
    except httpx.LocalProtocolError:  # httpx refuses to send it (b"Bearer "): write it by hand
        return send_raw(url, case)
    except httpx.TransportError as err:  # the server dropped the connection: a crash, counted
        return NO_ANSWER, repr(err)
    is_json = response.headers.get("content-type", "").startswith("application/json")
    failed = response.status_code >= 400 and is_json and case.method != "HEAD"
    return response.status_code, response.json()["error"]["message"] if failed else ""


def send_raw(url: str, case: Case) -> tuple[int | None, str]:
    host = urlsplit(url).netloc
    lines = [f"{case.method} {case.path} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(case.content)}"]
    head = "\r\n".join([*lines, "Connection: close"]).encode() + b"\r\n"
    for name, value in case.headers.items():
        head += (
            name.encode() + b": " + (value if isinstance(value, bytes) else value.encode("latin-1")) + b"\r\n"
        )
    answer = raw_http(url, head + b"\r\n" + case.content)
    status_line, _, rest = answer.partition(b"\r\n")
    status = int(status_line.split()[1]) if status_line.startswith(b"HTTP/") else NO_ANSWER
    body = rest.partition(b"\r\n\r\n")[2]
    message = json.loads(body)["error"]["message"] if body.startswith(b'{"error"') else ""
    return status, message


def hang_up(url: str, case: Case) -> tuple[int | None, str]:
    with httpx.Client(timeout=httpx.Timeout(10, read=0.02)) as quick:
        try:
            with quick.stream(
                case.method, f"{url}{case.path}", headers=case.headers, content=case.content
            ) as r:
                next(r.iter_bytes(), None)  # a first piece (or the whole short answer), then leave
                return None, f"hung up after status {r.status_code}"
        except httpx.ReadTimeout:
            return None, "hung up before the answer"


MALFORMED_HTTP = {
    "garbage request line": b"HELLO\r\n\r\n",
    "negative content-length": b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    "non-numeric content-length": b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 1e3\r\n\r\n",
    "superscript-digit content-length": b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: \xb2\r\n\r\n",
    "two content-lengths": b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
    "bad chunk size": b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    "NUL in a header": b"GET /health HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",
    "header without colon": b"GET /health HTTP/1.1\r\nHost: x\r\nnocolon\r\n\r\n",
    "HTTP/9.9": b"GET /health HTTP/9.9\r\nHost: x\r\n\r\n",
    "short body, then close": b'POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"prompt"',
}


def raw_http(url: str, payload: bytes) -> bytes:
    """Send bytes on a fresh connection; what came back before the server closed it (or 2 s)."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=2) as sock:
        sock.sendall(payload)
        if payload.endswith(b'"prompt"'):
            sock.shutdown(socket.SHUT_WR)  # the client gives up mid-body
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except (TimeoutError, ConnectionResetError):
            pass
    return b"".join(chunks)


def burst(client: httpx.Client, url: str, n: int) -> list[int]:
    """n valid requests at once against max_concurrent=6: batched, and some 429s."""
    bodies = [completion_body() if i % 2 else chat_body() for i in range(n)]

    def post(i):
        path = "/v1/completions" if i % 2 else "/v1/chat/completions"
        return client.post(f"{url}{path}", json=bodies[i], headers=AUTH).status_code

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(post, range(n)))


def rss() -> int:
    gc.collect()
    return psutil.Process().memory_info().rss


def wait_idle(url: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while (status := httpx.get(f"{url}/health").json())["running"] + status[
        "queued"
    ] and time.monotonic() < deadline:
        time.sleep(0.05)
    return status


def test_fuzzed_requests_never_get_a_5xx_and_leave_the_server_well(served_model):
    model, tokenizer = served_model
    app = create_app(model, tokenizer, MODEL, LIMITS, api_key=KEY)
    recorder = Recorder(app)
    warm_up = generate_cases(SEED + 1, 40)
    cases = generate_cases(SEED, CASES)
    log: list[dict] = []
    seen: dict[str, Counter] = {}
    with serve_in_thread(recorder) as url, httpx.Client(timeout=60) as client:
        for case in warm_up:
            send(client, url, case)
        burst(client, url, 12)
        wait_idle(url)
        before = rss()
        for i, case in enumerate(cases):
            if i == len(cases) // 2:
                middle = rss()
            status, message = send(client, url, case)
            seen.setdefault(case.kind, Counter())[status] += 1
            log.append({"kind": case.kind, "what": case.what, "status": status, "message": message})
        bursts = burst(client, url, 12) + burst(client, url, 12)
        seen["burst"] = Counter(bursts)
        for name, payload in MALFORMED_HTTP.items():
            head = raw_http(url, payload).split(b"\r\n", 1)[0].decode("latin-1")
            status = int(head.split()[1]) if head.startswith("HTTP/") else NO_ANSWER
            status = None if payload.endswith(b'"prompt"') else status  # we hung up: no answer due
            seen.setdefault("malformed HTTP", Counter())[status] += 1
            log.append({"kind": "malformed HTTP", "what": name, "status": status, "message": head})
        status_after = wait_idle(url)
        after = rss()
        question, answer = CHATS[1]
        check = httpx.post(
            f"{url}/v1/chat/completions",
            json={"messages": [{"role": "user", "content": question}], "max_tokens": 8, "temperature": 0},
            headers=AUTH,
        )
    if os.environ.get("MINI_LM_FUZZ_LOG"):
        with open(os.environ["MINI_LM_FUZZ_LOG"], "w", encoding="utf-8") as out:
            for row in log:
                out.write(json.dumps(row) + "\n")
    sent = sum(sum(c.values()) for c in seen.values())
    print(
        f"\nfuzz: {sent} requests (seed {SEED}); server-side statuses {dict(sorted(recorder.statuses.items()))}"
    )
    for kind, counts in seen.items():
        print(f"  {kind:15s} {sum(counts.values()):4d}  {dict(sorted(counts.items(), key=str))}")
    print(f"  RSS before {before / 2**20:.1f} MiB, half-way {middle / 2**20:.1f}, after {after / 2**20:.1f}")

    client_5xx = [row for row in log if row["status"] is not None and not 0 < row["status"] < 500]
    assert not client_5xx, client_5xx[:5]
    assert not [s for s in recorder.statuses if s >= 500], recorder.statuses
    assert not recorder.crashes, recorder.crashes[:5]
    assert all(s in (200, 429) for s in seen["burst"]), seen["burst"]
    assert all(
        row["message"]
        for row in log
        if row["status"]
        and 400 <= row["status"] < 500
        and row["kind"] != "malformed HTTP"
        and "HEAD" not in row["what"]
    )
    assert check.status_code == 200 and check.json()["choices"][0]["message"]["content"] == answer
    assert status_after["running"] == 0 and status_after["queued"] == 0, status_after
    assert after - before < RSS_BOUND, (before, after)
    # every kind ran, and the fuzz reached generation, not only the validators
    assert len(seen) == len(KINDS) + 3, seen.keys()
    assert recorder.statuses[200] > 50, recorder.statuses
