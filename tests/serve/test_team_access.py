"""Running it for a team: API keys on every route family, the refusal to serve an open API beyond loopback,
CORS, request size limits, request ids, /metrics, /livez and /readyz. Through the app (lifespan runs) or the
real `rag serve` process, against the deterministic engine."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import ollama
import openai
import pytest
from fastapi.testclient import TestClient

from ingest.run import ingest_folder
from rag.errors import ExposedWithoutKeys
from rag.serve.app import create_app
from tests.support.helpers import ENGLISH, free_port, make_settings, write
from tests.support.servers import engine_process, serve_process

KEY, ADMIN = "team-key-1", "admin-key-1"
QUESTION = "When are the pumps inspected?"
CHAT = [{"role": "user", "content": QUESTION}]


@pytest.fixture
def docs(tmp_path: Path, fast_engine: str) -> Path:
    root = tmp_path / "docs"
    write(root / "cooling.md", "# Cooling\n\n" + ENGLISH * 2)
    ingest_folder(root, make_settings(tmp_path, fast_engine))
    return root


def keyed(tmp_path: Path, url: str, docs: Path | None = None, **overrides) -> TestClient:
    settings = make_settings(tmp_path, url, api_keys=KEY, admin_keys=ADMIN, docs_dir=docs, **overrides)
    return TestClient(create_app(settings))


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


# (method, path, body): one or more routes of each family: ours, the operator's, OpenAI's, Ollama's, the docs.
ROUTES = [
    ("POST", "/ask", {"question": QUESTION}),
    ("POST", "/ask", {"question": QUESTION, "stream": True}),
    ("POST", "/retrieve", {"question": QUESTION}),
    ("GET", "/documents", None),
    ("GET", "/health", None),
    ("GET", "/readyz", None),
    ("GET", "/metrics", None),
    ("GET", "/v1/models", None),
    ("POST", "/v1/chat/completions", {"model": "rag", "messages": CHAT}),
    ("GET", "/api/tags", None),
    ("GET", "/api/version", None),
    ("POST", "/api/show", {"model": "rag"}),
    ("POST", "/api/chat", {"model": "rag", "messages": CHAT, "stream": False}),
    ("GET", "/openapi.json", None),
]


def message_of(r: httpx.Response) -> str:
    """The error message in the shape of the route's family: OpenAI's, Ollama's, or ours."""
    error = r.json()["error"]
    if r.request.url.path.startswith("/api/"):
        return str(error)
    if not r.request.url.path.startswith("/v1/"):
        assert error["code"] == "unauthorized"
    return str(error["message"])


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
def test_every_route_family_needs_a_key_and_answers_with_one(tmp_path, docs, fast_engine, method, path, body):
    with keyed(tmp_path, fast_engine) as client:
        missing = client.request(method, path, json=body)
        wrong = client.request(method, path, json=body, headers=auth("not-a-key"))
        right = client.request(method, path, json=body, headers=auth(KEY))
        admin = client.request(method, path, json=body, headers=auth(ADMIN))
    for refused in (missing, wrong):
        assert refused.status_code == 401, refused.text
        assert refused.headers["www-authenticate"].startswith("Bearer")
        assert "RAG_API_KEYS" in message_of(refused)
    assert "Authorization: Bearer" in message_of(missing)
    assert right.status_code == 200, right.text
    assert admin.status_code == 200, admin.text


@pytest.mark.parametrize("path", ["/livez", "/", "/ui/app.js"])
def test_the_liveness_probe_and_the_web_pages_own_files_need_no_key(tmp_path, docs, fast_engine, path):
    with keyed(tmp_path, fast_engine) as client:
        r = client.get(path)
    assert r.status_code == 200, r.text


def test_starting_a_sync_needs_an_admin_key(tmp_path, docs, fast_engine):
    with keyed(tmp_path, fast_engine, docs) as client:
        user = client.post("/sync", headers=auth(KEY))
        nobody = client.post("/sync")
        admin = client.post("/sync", headers=auth(ADMIN))
        job = client.get(f"/sync/{admin.json()['id']}", headers=auth(KEY))
    assert user.status_code == 403
    assert user.json()["error"]["code"] == "admin_key_required"
    assert "RAG_ADMIN_KEYS" in user.json()["error"]["message"]
    assert nobody.status_code == 401
    assert admin.status_code == 202, admin.text
    assert job.status_code == 200


def test_keys_can_come_from_a_file(tmp_path, docs, fast_engine):
    keys = write(tmp_path / "keys.txt", "# the team's keys\nfrom-file-1\n\nfrom-file-2\n")
    with TestClient(create_app(make_settings(tmp_path, fast_engine, api_keys_file=keys))) as client:
        assert client.get("/documents", headers=auth("from-file-2")).status_code == 200
        assert client.get("/documents", headers=auth("# the team's keys")).status_code == 401
        assert client.get("/documents").status_code == 401


def rag_cli(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rag", *args], env={**os.environ, **env}, cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_official_clients_send_the_key_as_they_always_do(tmp_path, docs, fast_engine):
    """The OpenAI SDK (api_key=), the Ollama client (an Authorization header) and `rag ask --url` (the first of
    RAG_API_KEYS) against the real process."""
    with serve_process(tmp_path / "storage", fast_engine, RAG_API_KEYS=KEY) as (base, _log):
        reply = openai.OpenAI(base_url=f"{base}/v1", api_key=KEY).chat.completions.create(
            model="rag", messages=CHAT)  # type: ignore[arg-type]
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{base}/v1", api_key="wrong").models.list()
        tags = ollama.Client(host=base, headers=auth(KEY)).list()
        with pytest.raises(ollama.ResponseError) as refused:
            ollama.Client(host=base).list()
        ours = rag_cli("ask", "--url", base, QUESTION, cwd=tmp_path, RAG_API_KEYS=KEY)
        ours_without = rag_cli("ask", "--url", base, QUESTION, cwd=tmp_path, RAG_API_KEYS="")
    assert ours.returncode == 0, ours.stderr
    assert "Sources:" in ours.stdout
    assert ours_without.returncode == 2
    assert "401" in ours_without.stderr
    assert reply.choices[0].message.content
    assert [m.model for m in tags.models] == ["rag:latest"]
    assert refused.value.status_code == 401


# -- an open API beyond loopback ---------------------------------------------------------------------------


def run_serve(tmp_path: Path, fast_engine: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "OLLAMA_HOST": fast_engine, "RAG_STORAGE_DIR": str(tmp_path / "storage"), **env}
    environment.pop("RAG_API_KEYS", None)
    return subprocess.run([sys.executable, "-m", "rag", "serve", "--port", str(free_port()), *args],
                          env=environment, cwd=tmp_path, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10"])
def test_rag_serve_will_not_listen_beyond_loopback_without_a_key(tmp_path, fast_engine, host):
    done = run_serve(tmp_path, fast_engine, "--host", host)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"error: rag serve will not listen on {host}")
    assert "RAG_API_KEYS=" in lines[0]
    assert "--insecure-no-auth" in lines[0]
    with pytest.raises(ExposedWithoutKeys):
        create_app(make_settings(tmp_path, fast_engine, host=host))


def test_beyond_loopback_it_serves_with_a_key_or_when_told_to_be_insecure(tmp_path, docs, fast_engine):
    with serve_process(tmp_path / "storage", fast_engine, "--host", "0.0.0.0", RAG_API_KEYS=KEY) as (base, _log):
        refused = httpx.get(f"{base}/documents", timeout=10)
        answered = httpx.get(f"{base}/documents", headers=auth(KEY), timeout=10)
    with serve_process(tmp_path / "storage", fast_engine, "--host", "0.0.0.0", "--insecure-no-auth") as (b, log2):
        open_api = httpx.get(f"{b}/documents", timeout=10)
        warned = log2.read_text()
    assert refused.status_code == 401
    assert answered.status_code == 200
    assert open_api.status_code == 200
    assert "INSECURE: rag serve listens on 0.0.0.0 with no API key (--insecure-no-auth)" in warned


# -- CORS ----------------------------------------------------------------------------------------------------

PREFLIGHT = {"Origin": "https://wiki.office.lan", "Access-Control-Request-Method": "POST",
             "Access-Control-Request-Headers": "authorization, content-type"}


def test_cors_preflight_is_answered_for_allowed_origins_only(tmp_path, docs, fast_engine):
    with keyed(tmp_path, fast_engine, cors_origins="https://wiki.office.lan") as client:
        allowed = client.options("/ask", headers=PREFLIGHT)
        other = client.options("/ask", headers={**PREFLIGHT, "Origin": "https://evil.example"})
        call = client.post("/ask", json={"question": QUESTION},
                           headers={**auth(KEY), "Origin": "https://wiki.office.lan"})
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://wiki.office.lan"
    assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
    assert other.status_code == 400
    assert "access-control-allow-origin" not in other.headers
    assert call.status_code == 200
    assert call.headers["access-control-allow-origin"] == "https://wiki.office.lan"
    assert "x-request-id" in call.headers["access-control-expose-headers"].lower()


def test_no_origin_is_allowed_by_default(tmp_path, docs, fast_engine):
    with keyed(tmp_path, fast_engine) as client:
        preflight = client.options("/ask", headers=PREFLIGHT)
        call = client.post("/ask", json={"question": QUESTION}, headers={**auth(KEY), "Origin": PREFLIGHT["Origin"]})
    assert "access-control-allow-origin" not in preflight.headers
    assert preflight.status_code in (401, 405)
    assert "access-control-allow-origin" not in call.headers


# -- request size ---------------------------------------------------------------------------------------------


def test_request_size_limits_are_413_and_422_with_a_clear_message(tmp_path, docs, fast_engine):
    with keyed(tmp_path, fast_engine, max_body_bytes=4096) as client:
        big = client.post("/ask", content=json.dumps({"question": "x" * 5000}), headers={
            **auth(KEY), "content-type": "application/json"})
        chunked = client.post("/ask", content=iter([b'{"question": "', b"y" * 5000, b'"}']), headers={
            **auth(KEY), "content-type": "application/json"})
    with keyed(tmp_path, fast_engine) as client:
        long_question = client.post("/ask", json={"question": "z" * 4001}, headers=auth(KEY))
        long_history = client.post("/ask", json={"messages": CHAT * 201}, headers=auth(KEY))
    for r in (big, chunked):
        assert r.status_code == 413
        assert r.json()["error"]["code"] == "payload_too_large"
        assert "RAG_MAX_BODY_BYTES" in r.json()["error"]["message"]
    assert long_question.status_code == 422
    assert long_question.json()["error"]["message"].startswith("question:")
    assert long_history.status_code == 422
    assert long_history.json()["error"]["message"].startswith("messages:")


# -- request ids ---------------------------------------------------------------------------------------------


def test_a_request_id_is_taken_or_made_and_on_every_response(tmp_path, docs, fast_engine):
    with keyed(tmp_path, fast_engine) as client:
        given = client.get("/documents", headers={**auth(KEY), "X-Request-ID": "abc-123"})
        made = client.get("/documents", headers=auth(KEY))
        refused = client.get("/documents", headers={"X-Request-ID": "refused-1"})
        junk = client.get("/documents", headers={**auth(KEY), "X-Request-ID": "no spaces\tor tabs"})
        live = client.get("/livez")
    assert given.headers["x-request-id"] == "abc-123"
    assert re.fullmatch(r"[0-9a-f]{32}", made.headers["x-request-id"])
    assert refused.status_code == 401
    assert refused.headers["x-request-id"] == "refused-1"
    assert re.fullmatch(r"[0-9a-f]{32}", junk.headers["x-request-id"])
    assert live.headers["x-request-id"] != made.headers["x-request-id"]


def test_every_log_line_of_a_request_carries_its_id_in_json_logs(tmp_path, docs, fast_engine):
    with serve_process(tmp_path / "storage", fast_engine, RAG_API_KEYS=KEY, RAG_LOG_FORMAT="json") as (base, log):
        httpx.post(f"{base}/ask", json={"question": QUESTION}, headers={"X-Request-ID": "req-no-key"}, timeout=30)
        ok = httpx.post(f"{base}/ask", json={"question": QUESTION}, timeout=60,
                        headers={**auth(KEY), "X-Request-ID": "req-ok"})
        lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    assert ok.status_code == 200
    refused = [e for e in lines if e.get("request_id") == "req-no-key"]
    assert {e["logger"] for e in refused} >= {"rag.serve.auth", "uvicorn.access"}
    assert any("an API key is needed" in e["message"] for e in refused)
    answered = [e for e in lines if e.get("request_id") == "req-ok"]
    assert any(e["logger"] == "uvicorn.access" and "POST /ask" in e["message"] and "200" in e["message"]
               for e in answered)
    assert all({"time", "level", "logger", "message"} <= set(e) for e in lines)
    # What is logged outside any request has no id.
    assert any("request_id" not in e for e in lines)


# -- metrics -------------------------------------------------------------------------------------------------


def sample(metrics: str, name: str, **labels: str) -> float:
    """One sample's value from Prometheus text; 0 when it is absent."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in metrics.splitlines():
        if line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        metric, _, label_text = key.partition("{")
        if metric == name and ",".join(sorted(label_text.rstrip("}").split(","))) == want:
            return float(value)
    return 0.0


def test_metrics_move_after_an_ask(tmp_path, docs, fast_engine):
    with keyed(tmp_path, fast_engine) as client:
        before = client.get("/metrics", headers=auth(KEY)).text
        assert client.post("/ask", json={"question": QUESTION}, headers=auth(KEY)).status_code == 200
        with client.stream("POST", "/ask", json={"question": QUESTION, "stream": True}, headers=auth(KEY)) as s:
            assert [json.loads(line)["type"] for line in s.iter_lines() if line][-1] == "done"
        client.get("/documents")  # refused: counted under its route too
        after = client.get("/metrics", headers=auth(KEY))
    assert after.headers["content-type"].startswith("text/plain")
    text = after.text
    asked = {"method": "POST", "route": "/ask", "status": "200"}
    assert sample(text, "rag_http_requests_total", **asked) == sample(before, "rag_http_requests_total", **asked) + 2
    assert sample(text, "rag_http_requests_total", method="GET", route="/documents", status="401") == 1
    for stage in ("embed_question", "retrieve", "generate"):
        assert sample(text, "rag_ask_stage_seconds_count", stage=stage) == 2, stage
    assert sample(text, "rag_generated_tokens_total") > sample(before, "rag_generated_tokens_total")
    assert sample(text, "rag_indexed_documents") == 1
    assert sample(text, "rag_indexed_chunks") > 0


# -- liveness and readiness ----------------------------------------------------------------------------------


def test_liveness_stays_200_and_readiness_is_503_with_the_reason_when_the_engine_stops(tmp_path):
    with engine_process() as (url, proc):
        write(tmp_path / "docs" / "a.md", ENGLISH)
        ingest_folder(tmp_path / "docs", make_settings(tmp_path, url))
        with keyed(tmp_path, url, ollama_retry_backoff=0.05) as client:
            ready = client.get("/readyz", headers=auth(KEY))
            proc.kill()
            proc.wait()
            not_ready = client.get("/readyz", headers=auth(KEY))
            alive = client.get("/livez")
            health = client.get("/health", headers=auth(KEY))
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready"}
    assert not_ready.status_code == 503
    assert not_ready.json()["status"] == "not_ready"
    assert f"cannot reach Ollama at {url}" in not_ready.json()["reason"]
    assert alive.status_code == 200
    assert alive.json() == {"status": "alive"}
    assert health.status_code == 503  # /health as it was
    assert health.json()["ollama"]["reachable"] is False


def test_readiness_names_a_missing_model_and_metrics_count_it(tmp_path, docs, fast_engine):
    with keyed(tmp_path, fast_engine, chat_model="qwen2.5:7b") as client:
        r = client.get("/readyz", headers=auth(KEY))
        asked = client.post("/ask", json={"question": QUESTION}, headers=auth(KEY))
        metrics = client.get("/metrics", headers=auth(KEY)).text
    assert r.status_code == 503
    assert "ollama pull qwen2.5:7b" in r.json()["reason"]
    assert asked.status_code == 503
    assert sample(metrics, "rag_ollama_errors_total", kind="model_not_found") >= 1
