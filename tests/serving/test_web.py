"""The chat page in headless Chromium (Debian's chromium, driven by Playwright) against a real
`mini-lm serve` subprocess: type a message, watch the answer arrive piece by piece."""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import time

import httpx
import pytest

from mini_lm.commands.serve import is_loopback

from .conftest import CHATS

# Without these, Chromium phones home at start-up and this machine's closed network refuses it.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
MODEL = "tiny-chat"


@pytest.fixture(scope="module")
def chromium() -> str:
    """Path of Debian's chromium: missing is a failure under CI=true, a skip otherwise."""
    path = os.environ.get("MINI_LM_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if path and importlib.util.find_spec("playwright"):
        return path
    message = (
        "the web page test needs Debian's chromium (apt-get install chromium) and the playwright package"
    )
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def cli_server(served_model_dir):
    """`mini-lm serve MODEL_DIR` as a user runs it (default host: loopback)."""
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "mini_lm.cli",
        "serve",
        str(served_model_dir),
        "--port",
        str(port),
        "--served-model-name",
        MODEL,
        "--torch-threads",
        "1",
        "--log-level",
        "warning",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        try:
            if httpx.get(f"{url}/health").status_code == 200:
                break
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"mini-lm serve did not come up:\n{proc.communicate()[0]}")
        time.sleep(0.2)
    yield url
    proc.terminate()
    proc.wait(30)


# Records every text the last assistant bubble shows, in order: streaming shows a growing prefix.
RECORD_UPDATES = """() => {
  window.__shown = [];
  new MutationObserver((records) => {
    for (const r of records) for (const node of r.addedNodes)
      if (node.nodeType === Node.TEXT_NODE && node.parentElement.matches('.message.assistant .content'))
        window.__shown.push(node.textContent);
  }).observe(document.getElementById('messages'), {childList: true, subtree: true});
}"""


def send(page, text: str, replies_before: int) -> str:
    from playwright.sync_api import expect

    window_shown = len(page.evaluate("window.__shown"))
    page.fill("#prompt", text)
    page.press("#prompt", "Enter")
    stats = page.locator(".message.assistant .stats").nth(replies_before)
    expect(stats).to_contain_text("finish:", timeout=60_000)
    shown = page.evaluate("window.__shown")[window_shown:]
    final = page.locator(".message.assistant .content").nth(replies_before).inner_text()
    assert len(shown) > 1 and shown[-1] == final, shown  # several updates, not one finished answer
    assert all(final.startswith(prefix) for prefix in shown)
    return final


def test_chat_page_streams_answers(chromium, cli_server, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=chromium,
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1100, "height": 720},
        )
        try:
            page = browser.new_page()
            errors = []
            page.on("pageerror", lambda err: errors.append(str(err)))
            page.goto(cli_server)
            expect(page.locator("#status")).to_have_text("ready")
            expect(page.locator("#model-name")).to_have_text(MODEL)
            page.evaluate(RECORD_UPDATES)
            page.locator("#temperature").fill("0")  # greedy: the page must show the memorised answers
            question, answer = CHATS[0]
            assert send(page, question, 0) == answer
            page.check("input[name=mode][value=complete]")
            continuation = send(page, "李娜在", 1)
            page.screenshot(path=str(tmp_path / "chat.png"))
            if os.environ.get("MINI_LM_SCREENSHOT_DIR"):
                shutil.copy(tmp_path / "chat.png", os.environ["MINI_LM_SCREENSHOT_DIR"])
            assert page.locator(".message.assistant .stats").first.inner_text().endswith("finish: stop")
            assert not errors
        finally:
            browser.close()
    api = httpx.post(
        f"{cli_server}/v1/completions", json={"prompt": "李娜在", "temperature": 0, "max_tokens": 128}
    )
    assert continuation == api.json()["choices"][0]["text"]


def test_serve_binds_loopback_by_default_and_rejects_a_missing_dir(tmp_path):
    from mini_lm.cli import build_parser, main

    assert build_parser().parse_args(["serve", "some/dir"]).host == "127.0.0.1"
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")
    assert main(["serve", str(tmp_path / "missing")]) == 2
    assert main(["serve", str(tmp_path), "--max-tokens-limit", "0"]) == 2
