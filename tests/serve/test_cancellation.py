"""A client that leaves stops what it started, down to the engine: real `rag serve` and engine processes."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from ingest.run import ingest_folder
from tests.support.helpers import ENGLISH, make_settings, write
from tests.support.servers import running_engine, serve_process

TOKEN_DELAY = 0.02  # seconds per generated token
NUM_PREDICT = 40  # a whole answer takes 40 tokens: 0.8 s, so 50 of them queued take 40 s
QUESTION = "When are the pumps inspected?"


@pytest.fixture(scope="module")
def slow_engine() -> Iterator[str]:
    with running_engine("deterministic", RAG_ENGINE_TOKEN_DELAY=str(TOKEN_DELAY)) as url:
        yield url


@pytest.fixture
def served(tmp_path: Path, slow_engine: str) -> Iterator[tuple[str, Path]]:
    root = tmp_path / "docs"
    write(root / "cooling.md", "# Cooling\n\n" + ENGLISH * 4)
    ingest_folder(root, make_settings(tmp_path, slow_engine))
    # generate: the model's whole answer is streamed (auto would stop the stand-in model's echo at its first
    # unsupported sentence, and there would be little generation left to cancel).
    with serve_process(tmp_path / "storage", slow_engine, RAG_NUM_PREDICT=str(NUM_PREDICT), RAG_MIN_SCORE="0",
                       RAG_ANSWER_MODE="generate") as s:
        yield s


def stats(engine: str) -> dict:
    return httpx.get(f"{engine}/engine/stats", timeout=10).json()


def timed_ask(base: str) -> float:
    started = time.monotonic()
    r = httpx.post(f"{base}/ask", json={"question": QUESTION}, timeout=120)
    assert r.status_code == 200, r.text
    assert r.json()["answer"].startswith("You said")
    return time.monotonic() - started


def drop(base: str, n: int, stream: bool, after: float) -> None:
    """Send n /ask requests on their own connections, then close them all `after` seconds later."""
    url = urlsplit(base)
    body = json.dumps({"question": QUESTION, "stream": stream}).encode()
    head = (
        f"POST /ask HTTP/1.1\r\nHost: {url.netloc}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    sockets = []
    for _ in range(n):
        s = socket.create_connection((url.hostname, url.port))
        s.sendall(head.encode() + body)
        sockets.append(s)
    time.sleep(after)
    for s in sockets:
        s.close()


def seconds_until_free(engine: str) -> float:
    """How long a one-token chat sent straight to the engine waits: it runs once no dropped answer holds the
    engine's one slot or waits in its queue."""
    started = time.monotonic()
    body = {"model": "smollm2:135m", "messages": [{"role": "user", "content": "ok"}], "stream": False,
            "options": {"num_predict": 1}}
    assert httpx.post(f"{engine}/api/chat", json=body, timeout=120).status_code == 200
    return time.monotonic() - started


@pytest.mark.parametrize("stream", [True, False], ids=["streaming", "not-streaming"])
def test_dropped_asks_stop_their_generations_and_the_next_ask_is_not_kept_waiting(served, slow_engine, stream):
    base, log = served
    timed_ask(base)  # models loaded
    normal = timed_ask(base)
    before = stats(slow_engine)
    drop(base, 50, stream, after=0.5)
    free_after = seconds_until_free(slow_engine)
    after = stats(slow_engine)
    next_ask = timed_ask(base)
    started = after["requests"].get("/api/chat", 0) - before["requests"].get("/api/chat", 0) - 1  # not the probe
    cancelled = after["cancelled"] - before["cancelled"]
    tokens = after["generated_tokens"] - before["generated_tokens"]
    print(f"{stream=}: {started} generations reached the engine, {cancelled} cancelled, {tokens} tokens; "
          f"engine free {free_after:.1f}s after the drop; /ask {normal:.2f}s before, {next_ask:.2f}s after")
    assert free_after < 5
    assert tokens < 50 * NUM_PREDICT / 4  # 2,000 tokens had every dropped answer been generated
    assert cancelled >= started - 1  # at most the one generating at the drop may have finished first
    assert next_ask < normal + 2
    if not stream:
        assert "the client disconnected" in log.read_text()
