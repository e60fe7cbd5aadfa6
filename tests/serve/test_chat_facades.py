"""The OpenAI- and Ollama-compatible endpoints' protocol, through the app against the deterministic engine:
shapes, streaming framing, errors in each client's shape, and nothing of Ollama's model management reachable.
(The real `openai` and `ollama` clients against a real `rag serve` on the bundled models: test_chat_clients.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from ingest.run import ingest_folder
from rag.serve.app import create_app
from tests.support.helpers import ENGLISH, dead_url, engine_requests, make_settings, write

QUESTION = "When are the pumps inspected?"


@pytest.fixture
def settings(tmp_path: Path, fast_engine: str):
    root = tmp_path / "docs"
    write(root / "cooling.md", "# Cooling\n\n" + ENGLISH * 2)
    settings = make_settings(tmp_path, fast_engine)
    ingest_folder(root, settings)
    return settings


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def test_openai_completion_has_citations_a_sources_block_usage_and_source_objects(settings):
    with TestClient(create_app(settings)) as client:
        assert client.get("/v1/models").json()["data"][0]["id"] == "rag"
        r = client.post("/v1/chat/completions", json={"model": "rag", "messages": user(QUESTION)})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "chat.completion"
    content = body["choices"][0]["message"]["content"]
    assert content.endswith("\n\nSources:\n[1] cooling.md") or "\n\nSources:\n[1] cooling.md\n" in content
    assert body["sources"][0]["source"] == "cooling.md"
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"] > 0


def test_openai_stream_is_sse_ending_in_done_with_the_same_content(settings):
    with TestClient(create_app(settings)) as client:
        whole = client.post("/v1/chat/completions", json={"model": "rag", "messages": user(QUESTION)}).json()
        with client.stream("POST", "/v1/chat/completions", json={
            "model": "rag", "messages": user(QUESTION), "stream": True, "stream_options": {"include_usage": True},
        }) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            lines = [line for line in r.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    content = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert content == whole["choices"][0]["message"]["content"]
    finals = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"] == "stop"]
    assert len(finals) == 1
    assert finals[0]["sources"][0]["source"] == "cooling.md"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] > 0


def test_sources_block_can_be_switched_off(settings):
    with TestClient(create_app(settings.model_copy(update={"chat_sources": False}))) as client:
        body = client.post("/v1/chat/completions", json={"model": "rag", "messages": user(QUESTION)}).json()
    assert "\n\nSources:\n[1]" not in body["choices"][0]["message"]["content"]
    assert body["sources"]  # the field stays: it is for clients that read it


@pytest.mark.parametrize(("payload", "status", "field"), [
    ({"model": "gpt-4o", "messages": user("hi")}, 404, "gpt-4o"),
    ({"model": "rag", "messages": []}, 422, "messages"),
    ({"model": "rag", "messages": [{"role": "assistant", "content": "hi"}]}, 422, "last message"),
    ({"model": "rag", "messages": user("   ")}, 422, "messages[0].content"),
    ({"messages": user("hi")}, 422, "model"),
])
def test_openai_errors_have_openais_shape_and_asks_status(settings, payload, status, field):
    with TestClient(create_app(settings)) as client:
        r = client.post("/v1/chat/completions", json=payload)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "code"}
    assert field in error["message"]
    assert error["type"] == "invalid_request_error"


def test_openai_ollama_down_is_503_in_openais_shape(tmp_path, settings):
    with TestClient(create_app(settings.model_copy(update={"ollama_host": dead_url()}))) as client:
        r = client.post("/v1/chat/completions", json={"model": "rag", "messages": user(QUESTION)})
    assert r.status_code == 503
    assert r.json()["error"]["type"] == "server_error"
    assert "cannot reach Ollama" in r.json()["error"]["message"]


def test_ollama_tags_show_version_and_chat_not_streamed(settings):
    with TestClient(create_app(settings)) as client:
        names = [m["name"] for m in client.get("/api/tags").json()["models"]]
        show = client.post("/api/show", json={"model": "rag:latest"})
        version = client.get("/api/version").json()["version"]
        r = client.post("/api/chat", json={"model": "rag", "messages": user(QUESTION), "stream": False})
    assert names == ["rag:latest"]
    assert show.status_code == 200
    assert "completion" in show.json()["capabilities"]
    assert version
    body = r.json()
    assert body["done"] is True
    assert body["done_reason"] == "stop"
    assert "\n\nSources:\n[1] cooling.md" in body["message"]["content"]
    assert body["eval_count"] > 0


def test_ollama_chat_streams_ndjson_by_default_as_ollama_does(settings):
    with TestClient(create_app(settings)) as client, \
            client.stream("POST", "/api/chat", json={"model": "rag", "messages": user(QUESTION)}) as r:
        assert r.headers["content-type"].startswith("application/x-ndjson")
        parts = [json.loads(line) for line in r.iter_lines() if line]
    assert [p["done"] for p in parts] == [False] * (len(parts) - 1) + [True]
    text = "".join(p["message"]["content"] for p in parts)
    assert "\n\nSources:\n[1] cooling.md" in text
    assert parts[-1]["sources"][0]["source"] == "cooling.md"


@pytest.mark.parametrize(("method", "path"), [
    ("POST", "/api/pull"), ("POST", "/api/push"), ("POST", "/api/create"), ("POST", "/api/copy"),
    ("DELETE", "/api/delete"), ("POST", "/api/generate"), ("POST", "/api/embed"), ("GET", "/api/ps"),
])
def test_other_ollama_routes_are_404_in_ollamas_shape_and_never_reach_ollama(settings, method, path):
    before = engine_requests(settings.ollama_url, path)
    with TestClient(create_app(settings)) as client:
        r = client.request(method, path, json={"model": "smollm2:135m", "name": "smollm2:135m"})
    assert r.status_code == 404
    assert isinstance(r.json()["error"], str)
    assert engine_requests(settings.ollama_url, path) == before


def test_ollama_unknown_model_is_404_in_ollamas_shape(settings):
    with TestClient(create_app(settings)) as client:
        r = client.post("/api/chat", json={"model": "llama3", "messages": user("hi"), "stream": False})
        shown = client.post("/api/show", json={"name": "llama3"})
    assert r.status_code == shown.status_code == 404
    assert "llama3" in r.json()["error"]
