"""The HTTP API through the app factory (lifespan runs), against the deterministic engine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from ingest.run import ingest_folder
from rag.serve.app import create_app
from tests.support.helpers import CHINESE, ENGLISH, dead_url, make_settings, write


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


# -- questions of nothing but spaces, and every error in the one shape ----------------------------------

BLANKS = ["   ", "\t\n", "\u00a0", "\u3000\u3000", " \u200b "]


@pytest.mark.parametrize(
    ("path", "extra"), [("/ask", {}), ("/ask", {"stream": True}), ("/retrieve", {})], ids=["ask", "stream", "retrieve"]
)
def test_a_question_of_only_spaces_is_422_naming_the_field(tmp_path, indexed, fast_engine, path, extra):
    with client_for(tmp_path, fast_engine) as client:
        responses = [client.post(path, json={"question": blank, **extra}) for blank in BLANKS]
    for blank, r in zip(BLANKS, responses, strict=True):
        assert r.status_code == 422, (blank, r.text)
        assert r.json() == {"error": {"code": "bad_request", "message": "question: must contain more than spaces"}}


def assert_error_shape(r, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message"}
    assert body["error"]["code"] == code


@pytest.mark.parametrize(
    ("method", "path", "content", "status", "code"),
    [
        ("POST", "/ask", b'{"question": "caf\xe9?"}', 422, "bad_request"),  # Latin-1, not UTF-8
        ("POST", "/ask", b"\xff\xfe\x00\x01", 422, "bad_request"),
        ("POST", "/ask", b'{"question": ', 422, "bad_request"),
        ("POST", "/retrieve", b"[1, 2]", 422, "bad_request"),
        ("GET", "/ask", b"", 405, "method_not_allowed"),
        ("GET", "/no-such-page", b"", 404, "not_found"),
    ],
    ids=["latin-1-body", "binary-body", "malformed-json", "not-an-object", "wrong-method", "no-such-route"],
)
def test_every_error_has_the_documented_shape(tmp_path, fast_engine, method, path, content, status, code):
    with client_for(tmp_path, fast_engine) as client:
        r = client.request(method, path, content=content, headers={"content-type": "application/json"})
    assert_error_shape(r, status, code)
    assert "Traceback" not in r.text
    if content.startswith(b'{"question": "caf'):
        assert "UTF-8" in r.json()["error"]["message"]


# -- the Host check --------------------------------------------------------------------------------------


def get_with_host(tmp_path, url, header: str, **overrides):
    with client_for(tmp_path, url, **overrides) as client:
        return client.get("/documents", headers={"host": header})


@pytest.mark.parametrize(
    "host", ["localhost:8080", "LOCALHOST", "127.0.0.1:8080", "127.0.0.2", "[::1]:8080", "app.localhost", "10.1.2.3"]
)
def test_loopback_names_and_the_bound_address_are_answered(tmp_path, fast_engine, host):
    r = get_with_host(tmp_path, fast_engine, host, allowed_hosts="", host="10.1.2.3", insecure_no_auth=True)
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8080", "127.0.0.1.evil.example", "0.0.0.0:8080"])
def test_any_other_host_is_403_in_the_error_shape(tmp_path, fast_engine, host):
    r = get_with_host(tmp_path, fast_engine, host, allowed_hosts="", host="0.0.0.0", insecure_no_auth=True)
    assert_error_shape(r, 403, "host_not_allowed")
    assert "RAG_ALLOWED_HOSTS" in r.json()["error"]["message"]


@pytest.mark.parametrize(
    ("allowed", "host", "status"),
    [
        ("rag.internal, *.lan", "rag.internal:8080", 200),
        ("rag.internal, *.lan", "box.office.lan", 200),
        ("rag.internal, *.lan", "lan", 403),
        ("rag.internal, *.lan", "evil.example", 403),
        ("*", "evil.example", 200),
    ],
)
def test_rag_allowed_hosts_adds_names(tmp_path, fast_engine, allowed, host, status):
    assert get_with_host(tmp_path, fast_engine, host, allowed_hosts=allowed).status_code == status


# -- a prompt that does not fit the model's context ------------------------------------------------------


def warning_codes(body: dict) -> list[str]:
    return [w["code"] for w in body["warnings"]]


def test_sources_that_would_not_fit_are_left_out_not_cut(tmp_path, fast_engine):
    write(tmp_path / "docs" / "cooling.md", ENGLISH * 12)
    settings = {"num_ctx": 256, "num_predict": 32, "chunk_size": 48, "chunk_overlap": 0}
    ingest_folder(tmp_path / "docs", make_settings(tmp_path, fast_engine, **settings))
    with client_for(tmp_path, fast_engine, top_k=8, **settings) as client:
        r = client.post("/ask", json={"question": "When are the pumps inspected?"})
    body = r.json()
    assert r.status_code == 200, r.text
    assert 1 <= len(body["sources"]) < 8
    assert warning_codes(body) == ["sources_left_out"]  # and no prompt_truncated: what was sent fit
    assert "RAG_NUM_CTX" in body["warnings"][0]["message"]


def test_a_prompt_cut_to_num_ctx_is_said_in_the_answer_and_the_log(tmp_path, indexed, fast_engine, caplog):
    question = "When are the pumps inspected? " + "Please answer carefully and precisely. " * 60
    with client_for(tmp_path, fast_engine, num_ctx=256, num_predict=32) as client:
        r = client.post("/ask", json={"question": question})
        with client.stream("POST", "/ask", json={"question": question, "stream": True}) as s:
            done = [json.loads(line) for line in s.iter_lines() if line][-1]
    body = r.json()
    assert r.status_code == 200, r.text
    assert "prompt_truncated" in warning_codes(body)
    assert "prompt_truncated" in warning_codes(done)
    assert "the prompt filled the model's context" in caplog.text


def test_default_settings_give_answers_without_warnings(tmp_path, indexed, fast_engine):
    with client_for(tmp_path, fast_engine) as client:
        for question in ("When are the pumps inspected?", "备份文件保存多久？"):
            r = client.post("/ask", json={"question": question})
            assert r.status_code == 200, r.text
            assert r.json()["warnings"] == [], question
