"""The HTTP API through the app factory (lifespan runs), against the deterministic engine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from ingest.run import ingest_folder
from rag.api import create_app
from tests.helpers import CHINESE, ENGLISH, dead_url, make_settings, write


@pytest.fixture
def indexed(tmp_path: Path, fast_engine: str) -> Path:
    root = tmp_path / "docs"
    write(root / "cooling.md", "# Cooling\n\n" + ENGLISH * 2)
    write(root / "backup.txt", CHINESE)
    ingest_folder(root, make_settings(tmp_path, fast_engine))
    return root


def client_for(tmp_path: Path, url: str, **overrides) -> TestClient:
    return TestClient(create_app(make_settings(tmp_path, url, **overrides)))


def test_ask_answers_with_numbered_sources_and_timings(tmp_path, indexed, fast_engine):
    with client_for(tmp_path, fast_engine) as client:
        r = client.post("/ask", json={"question": "When are the pumps inspected?", "top_k": 2})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["answer"]
    assert body["model"] == "smollm2:135m"
    assert [s["n"] for s in body["sources"]] == [1, 2]
    assert {"source", "page", "chunk_id", "score", "text"} <= set(body["sources"][0])
    assert body["sources"][0]["source"] == "cooling.md"
    assert set(body["timings_ms"]) == {"retrieve", "generate", "total"}
    assert body["timings_ms"]["total"] >= body["timings_ms"]["retrieve"]


def test_ask_streams_ndjson_sources_first_then_tokens_then_timings(tmp_path, indexed, fast_engine):
    with (
        client_for(tmp_path, fast_engine) as client,
        client.stream("POST", "/ask", json={"question": "When are the pumps inspected?", "stream": True}) as r,
    ):
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("application/x-ndjson")
        events = [json.loads(line) for line in r.iter_lines() if line]
    assert events[0]["type"] == "sources"
    assert events[0]["sources"]
    tokens = [e for e in events[1:-1] if e["type"] == "token"]
    assert tokens
    assert events[-1]["type"] == "done"
    assert events[-1]["answer"] == "".join(t["text"] for t in tokens).strip()
    assert set(events[-1]["timings_ms"]) == {"retrieve", "generate", "total"}


def test_retrieve_and_documents(tmp_path, indexed, fast_engine):
    with client_for(tmp_path, fast_engine) as client:
        r = client.post("/retrieve", json={"question": "备份文件保存多久？", "top_k": 1})
        docs = client.get("/documents").json()
    assert r.status_code == 200
    assert r.json()["sources"][0]["source"] == "backup.txt"
    assert {d["source"] for d in docs["documents"]} == {"cooling.md", "backup.txt"}
    assert docs["total_chunks"] == sum(d["chunks"] for d in docs["documents"]) > 0


def test_health_ok(tmp_path, indexed, fast_engine):
    with client_for(tmp_path, fast_engine) as client:
        r = client.get("/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok"
    assert body["ollama"]["models"] == {"smollm2:135m": True, "all-minilm": True}
    assert body["store"]["chunks"] > 0
    assert body["store"]["embed_model"] == "all-minilm"


def test_ollama_down_is_503(tmp_path, indexed):
    with client_for(tmp_path, dead_url()) as client:
        ask = client.post("/ask", json={"question": "When are the pumps inspected?"})
        health = client.get("/health")
    assert ask.status_code == 503
    assert ask.json()["error"]["code"] == "ollama_unavailable"
    assert "OLLAMA_HOST" in ask.json()["error"]["message"]
    assert health.status_code == 503
    assert health.json()["ollama"]["reachable"] is False


def test_missing_chat_model_is_503_with_pull_hint(tmp_path, indexed, fast_engine):
    with client_for(tmp_path, fast_engine, chat_model="qwen2.5:7b") as client:
        ask = client.post("/ask", json={"question": "When are the pumps inspected?"})
        health = client.get("/health")
    assert ask.status_code == 503
    assert ask.json()["error"]["code"] == "model_not_found"
    assert "ollama pull qwen2.5:7b" in ask.json()["error"]["message"]
    assert health.status_code == 503
    assert "ollama pull qwen2.5:7b" in health.json()["ollama"]["hint"]


def test_missing_model_mid_stream_is_an_error_record(tmp_path, indexed, fast_engine):
    with (
        client_for(tmp_path, fast_engine, chat_model="qwen2.5:7b") as client,
        client.stream("POST", "/ask", json={"question": "When are the pumps inspected?", "stream": True}) as r,
    ):
        events = [json.loads(line) for line in r.iter_lines() if line]
    assert events[-1]["type"] == "error"
    assert "ollama pull qwen2.5:7b" in events[-1]["error"]["message"]


def test_embedding_model_mismatch_is_409(tmp_path, indexed, fast_engine):
    with client_for(tmp_path, fast_engine, embed_model="nomic-embed-text") as client:
        r = client.post("/ask", json={"question": "When are the pumps inspected?"})
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "embedding_model_mismatch"
    assert "all-minilm" in r.json()["error"]["message"]


def test_nothing_indexed_says_how_to_ingest(tmp_path, fast_engine):
    with client_for(tmp_path, fast_engine) as client:
        r = client.post("/ask", json={"question": "anything?"})
    assert r.status_code == 409
    assert "rag ingest" in r.json()["error"]["message"]


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"question": ""}, "question"),
        ({"question": "x", "top_k": 0}, "top_k"),
        ({"top_k": 3}, "question"),
        ({"question": "x", "stream": "maybe"}, "stream"),
    ],
)
def test_bad_input_is_422_naming_the_field(tmp_path, fast_engine, payload, field):
    with client_for(tmp_path, fast_engine) as client:
        r = client.post("/ask", json=payload)
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "bad_request"
    assert field in r.json()["error"]["message"]


def test_malformed_json_is_422_not_a_traceback(tmp_path, fast_engine):
    with client_for(tmp_path, fast_engine) as client:
        r = client.post("/ask", content=b'{"question": ', headers={"content-type": "application/json"})
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "bad_request"
    assert "Traceback" not in r.text


def test_nothing_relevant_is_said_instead_of_guessed(tmp_path, indexed, fast_engine):
    with client_for(tmp_path, fast_engine, min_score=0.99) as client:
        r = client.post("/ask", json={"question": "What is the capital of Peru?"})
    body = r.json()
    assert r.status_code == 200
    assert body["sources"] == []
    assert body["abstained"] is True
    assert body["answer"] == "The documents do not cover this."


def test_openapi_docs_are_served(tmp_path, fast_engine):
    with client_for(tmp_path, fast_engine) as client:
        assert client.get("/docs").status_code == 200
        paths = client.get("/openapi.json").json()["paths"]
    assert {"/ask", "/retrieve", "/documents", "/health"} <= set(paths)
