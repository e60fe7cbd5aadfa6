"""The Host check against DNS rebinding: the middleware on its own, and the real `rag serve` process."""

from __future__ import annotations

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from ingest.run import ingest_folder
from rag.hostcheck import HostCheck, binds_beyond_loopback
from tests.support.helpers import ENGLISH, make_settings, write
from tests.support.servers import serve_process


def tiny_app(**check: object) -> Starlette:
    app = Starlette(routes=[Route("/", lambda request: PlainTextResponse("ok"))])
    app.add_middleware(HostCheck, **check)
    return app


def test_the_middleware_alone_refuses_in_ollamas_shape_by_default():
    with TestClient(tiny_app(allowed_hosts=["ollama.lan"], bind_host="127.0.0.1")) as client:
        refused = client.get("/", headers={"host": "attacker.example:11434"})
        allowed = [client.get("/", headers={"host": h}).status_code for h in ("ollama.lan", "localhost:11434")]
    assert refused.status_code == 403
    assert refused.json() == {"error": "Host 'attacker.example:11434' is not allowed: use a loopback address, "
                                       "or add the name to the allowed hosts"}
    assert allowed == [200, 200]


@pytest.mark.parametrize(
    ("bind", "beyond"),
    [("127.0.0.1", False), ("localhost", False), ("::1", False), ("127.0.0.5", False),
     ("0.0.0.0", True), ("::", True), ("", True), ("192.168.1.5", True), ("myhost.lan", True)],
)
def test_binding_beyond_loopback(bind, beyond):
    assert binds_beyond_loopback(bind) is beyond


def test_rag_serve_refuses_a_foreign_host_and_warns_when_it_binds_beyond_loopback(tmp_path, fast_engine):
    write(tmp_path / "docs" / "a.md", ENGLISH)
    ingest_folder(tmp_path / "docs", make_settings(tmp_path, fast_engine))
    with serve_process(tmp_path / "storage", fast_engine) as (base, log):
        port = base.rsplit(":", 1)[1]
        refused = httpx.get(f"{base}/documents", headers={"host": "rebound.example"}, timeout=10)
        answered = httpx.get(f"{base}/documents", headers={"host": f"localhost:{port}"}, timeout=10)
        quiet = log.read_text()
    with serve_process(tmp_path / "storage", fast_engine, "--host", "0.0.0.0", "--insecure-no-auth") as (base, log):
        exposed_refused = httpx.get(f"{base}/documents", headers={"host": "rebound.example"}, timeout=10)
        warned = log.read_text()
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "host_not_allowed"
    assert answered.status_code == 200
    assert "beyond loopback" not in quiet
    assert "rag serve listens on 0.0.0.0, beyond loopback" in warned
    assert "RAG_ALLOWED_HOSTS" in warned
    assert exposed_refused.status_code == 403
