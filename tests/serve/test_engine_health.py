"""An engine that cannot generate is reported by GET /health and `rag status`, not only when a question fails.

Fault injection on the engine's deterministic backend (a fast stand-in model, named as such): its chat runner
is made to die of SIGILL, as a llama.cpp build that does not match the CPU does.
"""

from __future__ import annotations

import httpx
import pytest
from fastapi.testclient import TestClient

from rag.serve.app import create_app
from tests.support.helpers import make_settings
from tests.support.servers import running_engine
from tests.test_cli import rag

CHAT = "smollm2:135m"


@pytest.fixture
def faulty_engine():
    with running_engine("deterministic", RAG_ENGINE_TEST_FAULTS="1") as url:
        yield url


def chat(url: str, text: str) -> httpx.Response:
    body = {"model": CHAT, "messages": [{"role": "user", "content": text}], "stream": False}
    return httpx.post(f"{url}/api/chat", json=body, timeout=30)


def test_health_and_status_report_a_chat_runner_that_died(tmp_path, faulty_engine):
    settings = make_settings(tmp_path, faulty_engine)
    with TestClient(create_app(settings)) as client:
        assert client.get("/health").status_code == 200
        assert chat(faulty_engine, "<<runner-fault:SIGILL>>").status_code == 500
        r = client.get("/health")
        assert r.status_code == 503
        assert r.json()["ollama"]["generation_error"].startswith(
            f"model runner for {CHAT} terminated: signal SIGILL (illegal instruction)"
        )
        status = rag(tmp_path, faulty_engine, "status")
        assert status.returncode == 2
        assert "cannot generate: model runner for smollm2:135m terminated: signal SIGILL" in status.stdout
        assert chat(faulty_engine, "back").status_code == 200  # a fresh runner generated: healthy again
        assert client.get("/health").status_code == 200
        assert rag(tmp_path, faulty_engine, "status").returncode == 0
