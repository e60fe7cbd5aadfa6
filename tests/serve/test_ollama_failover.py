"""Retries and several Ollama hosts (rag.ollama's FailoverTransport), against real engines on loopback: one
made to answer 503 to its first requests (RAG_ENGINE_TEST_BUSY), and two engines with one killed mid-run."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from ingest.run import ingest_folder
from rag.serve.app import create_app
from tests.support.helpers import ENGLISH, dead_url, engine_requests, make_settings, write
from tests.support.servers import engine_process, running_engine, stop

QUESTION = "When are the pumps inspected?"


def docs(tmp_path: Path) -> Path:
    root = tmp_path / "docs"
    write(root / "cooling.md", "# Cooling\n\n" + ENGLISH * 2)
    write(root / "spares.md", "Spare parts are kept in building seven. " * 5)
    return root


def rejected(url: str) -> int:
    return int(httpx.get(f"{url}/engine/stats", timeout=10).json()["rejected"])


def test_an_ingest_outlasts_an_engine_answering_503_and_logs_the_retries(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="rag.ollama")
    with running_engine(RAG_ENGINE_TEST_BUSY="3") as url:
        settings = make_settings(tmp_path, url, ollama_retries=5, ollama_retry_backoff=0.05)
        result = ingest_folder(docs(tmp_path), settings)
        refusals = rejected(url)
    assert result.summary is not None
    assert result.summary.failures == []
    assert result.summary.added == 2
    assert refusals == 3
    retries = [r.getMessage() for r in caplog.records if "failed on every host" in r.getMessage()]
    assert len(retries) == 3
    assert "POST /api/embed failed on every host (503); retry 1 of 5" in retries[0]


def test_ask_is_answered_after_503s_and_says_retry_after_when_the_retries_run_out(tmp_path, fast_engine):
    ingest_folder(docs(tmp_path), make_settings(tmp_path, fast_engine))  # the same deterministic vectors
    with running_engine(RAG_ENGINE_TEST_BUSY="2") as url:
        settings = make_settings(tmp_path, url, ollama_retries=3, ollama_retry_backoff=0.05)
        with TestClient(create_app(settings)) as client:
            answered = client.post("/ask", json={"question": QUESTION})
            metrics = client.get("/metrics").text
        assert rejected(url) == 2
    with running_engine(RAG_ENGINE_TEST_BUSY="1000") as url:
        settings = make_settings(tmp_path, url, ollama_retries=2, ollama_retry_backoff=0.05)
        with TestClient(create_app(settings)) as client:
            busy = client.post("/ask", json={"question": QUESTION})
        assert rejected(url) == 3  # the first try and two retries
    assert answered.status_code == 200, answered.text
    assert 'rag_ollama_retries_total{kind="busy"} 2.0' in metrics
    assert 'rag_ollama_errors_total{kind="busy"} 2.0' in metrics
    assert busy.status_code == 503
    assert busy.headers["retry-after"] == "5"
    assert busy.json()["error"]["code"] == "ollama_unavailable"
    assert "busy" in busy.json()["error"]["message"]
    assert "after 2 retries" in busy.json()["error"]["message"]


def test_an_ollama_that_never_answered_is_reported_at_once_not_retried(tmp_path, fast_engine):
    ingest_folder(docs(tmp_path), make_settings(tmp_path, fast_engine))
    down = dead_url()
    settings = make_settings(tmp_path, down, ollama_retries=20, ollama_retry_backoff=60)
    with TestClient(create_app(settings)) as client:
        r = client.post("/ask", json={"question": QUESTION})  # 20 retries of 60 s would hang the test
    assert r.status_code == 503
    assert f"cannot reach Ollama at {down}" in r.json()["error"]["message"]


def chats(url: str) -> int:
    return engine_requests(url, "/api/chat")


def test_two_hosts_share_the_work_and_a_killed_one_is_skipped_until_it_answers_again(tmp_path):
    with engine_process() as (first, first_proc), engine_process() as (second, _):
        settings = make_settings(tmp_path, f"{first},{second}", ollama_retry_backoff=0.05)
        assert ingest_folder(docs(tmp_path), settings).summary is not None
        with TestClient(create_app(settings)) as client:
            before = [client.post("/ask", json={"question": QUESTION}) for _ in range(6)]
            shared = chats(first), chats(second)
            stop(first_proc, 30)  # mid-run: the app keeps running and knows nothing
            during = [client.post("/ask", json={"question": QUESTION}) for _ in range(10)]
            second_after_kill = chats(second)
            port = httpx.URL(first).port
            with engine_process(OLLAMA_HOST=f"127.0.0.1:{port}") as (revived, _):
                # Skipped while it rests (1 s, doubled while it stays down); asked again once it answers.
                back = 0
                for _ in range(300):
                    assert client.post("/ask", json={"question": QUESTION}).status_code == 200
                    if (back := chats(revived)) > 0:
                        break
            metrics = client.get("/metrics").text
    assert [r.status_code for r in before] == [200] * 6
    assert shared[0] >= 2
    assert shared[1] >= 2
    assert [r.status_code for r in during] == [200] * 10
    assert second_after_kill - shared[1] >= 10
    assert back > 0
    assert 'rag_ollama_errors_total{kind="connect"}' in metrics


@pytest.mark.parametrize("value", ["127.0.0.1:1,127.0.0.1:2", " http://a:1 , b:2,", "a:1,a:1"])
def test_ollama_host_lists_several_hosts(tmp_path, value):
    settings = make_settings(tmp_path, value)
    assert settings.ollama_url == settings.ollama_urls[0]
    assert len(settings.ollama_urls) == len({u.strip() for u in value.split(",") if u.strip()})
