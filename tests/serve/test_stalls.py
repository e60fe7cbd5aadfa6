"""Timeouts that fit the call, against a real engine process paused with SIGSTOP (it accepts connections
and answers nothing, as a stalled server does): health answers fast, an ingest waits the stall out."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
from fastapi.testclient import TestClient

from ingest.run import ingest_folder
from rag.errors import OllamaUnavailable
from rag.serve.app import create_app
from tests.support.helpers import ENGLISH, dead_url, engine_requests, make_settings, write
from tests.support.servers import engine_process


@pytest.fixture(scope="module")
def pausable() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """An engine of its own (pausing the session's would stall other tests), each embed call 0.1 s."""
    with engine_process("deterministic", RAG_ENGINE_EMBED_DELAY="0.1") as running:
        yield running


@contextmanager
def paused(proc: subprocess.Popen[bytes]) -> Iterator[None]:
    proc.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        proc.send_signal(signal.SIGCONT)


def test_health_answers_within_its_short_timeout_while_the_engine_stalls(tmp_path, pausable):
    url, proc = pausable
    settings = make_settings(tmp_path, url, health_timeout=1.0, request_timeout=30.0)
    with TestClient(create_app(settings)) as client, paused(proc):
        started = time.monotonic()
        r = client.get("/health")
        took = time.monotonic() - started
    assert took < 4  # not the 30 s request timeout
    assert r.status_code == 503
    assert r.json()["ollama"]["reachable"] is False
    assert "did not answer within 1s" in r.json()["ollama"]["error"]


def test_ingest_outlasts_an_engine_stall_shorter_than_its_retry_budget(tmp_path, pausable):
    url, proc = pausable
    for n in range(6):
        write(tmp_path / "docs" / f"f{n}.md", f"# Part {n}\n\n" + ENGLISH * 3)
    env = {
        **os.environ, "OLLAMA_HOST": url, "RAG_STORAGE_DIR": str(tmp_path / "storage"),
        "RAG_EMBED_BATCH_SIZE": "1",  # many calls: the stall lands in the middle of the run
        "RAG_REQUEST_TIMEOUT": "1",  # a call into the stall times out (and is retried)
        "RAG_EMBED_RETRIES": "4", "RAG_EMBED_RETRY_BACKOFF": "0.5",  # 0.5+1+2+4 = 7.5 s of waits, 5 s of calls
    }
    before = engine_requests(url)
    ingest = subprocess.Popen([sys.executable, "-m", "rag", "ingest", str(tmp_path / "docs")], env=env,
                              cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: engine_requests(url) >= before + 3, "the ingest to start embedding", ingest)
        with paused(proc):
            time.sleep(4)
        out, err = ingest.communicate(timeout=120)
    finally:
        ingest.kill()
    assert ingest.returncode == 0, err
    assert "6 added" in out
    assert "retry 1 of 4" in err
    assert "Traceback" not in err


def test_an_engine_that_never_answered_is_reported_at_once_not_retried(tmp_path):
    write(tmp_path / "docs" / "a.md", ENGLISH)
    settings = make_settings(tmp_path, dead_url(), embed_retries=5, embed_retry_backoff=10.0)
    started = time.monotonic()
    with pytest.raises(OllamaUnavailable, match="cannot reach Ollama"):
        ingest_folder(tmp_path / "docs", settings)
    assert time.monotonic() - started < 5


def wait_for(condition, what: str, proc: subprocess.Popen[str], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"exited with {proc.returncode} before {what}: {proc.stderr.read() if proc.stderr else ''}")
        try:
            if condition():
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")
