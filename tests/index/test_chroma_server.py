"""The same ingest and ask against a real `chroma run` server process instead of the embedded store."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from ingest.run import ingest_folder
from rag.index.chroma import ChromaStore
from rag.serve.app import create_app
from tests.support.helpers import CHINESE, ENGLISH, free_port, make_settings, write
from tests.support.servers import wait_http

pytestmark = pytest.mark.chroma_server


@pytest.fixture(scope="module")
def chroma_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    # The chroma CLI ships with the chromadb package, beside this interpreter (the venv need not be on PATH).
    exe = str(Path(sys.executable).with_name("chroma"))
    assert Path(exe).exists(), exe
    port = free_port()
    data = tmp_path_factory.mktemp("chroma-server")
    proc = subprocess.Popen(
        [exe, "run", "--path", str(data), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/api/v2/heartbeat", proc, "chroma run")
        yield "127.0.0.1", port
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_ingest_and_ask_through_a_chroma_server(tmp_path: Path, fast_engine, chroma_server):
    host, port = chroma_server
    root = tmp_path / "docs"
    write(root / "cooling.md", ENGLISH)
    write(root / "backup.txt", CHINESE)
    settings = make_settings(tmp_path, fast_engine, chroma_host=host, chroma_port=port, collection="srv")
    summary = ingest_folder(root, settings).summary
    assert summary is not None
    assert summary.added == 2
    assert not (settings.storage_dir / "chroma").exists(), "nothing may go to the embedded store"
    assert ChromaStore.open(settings).count() == summary.chunks_written

    with TestClient(create_app(settings)) as client:
        r = client.post("/ask", json={"question": "When are the pumps inspected?"})
        health = client.get("/health").json()
    assert r.status_code == 200
    assert r.json()["sources"][0]["source"] == "cooling.md"
    assert health["store"]["chunks"] == summary.chunks_written

    (root / "backup.txt").unlink()
    again = ingest_folder(root, settings).summary
    assert again is not None
    assert again.deleted == 1
    assert set(ChromaStore.open(settings).sources()) == {"cooling.md"}


def test_serving_through_a_chroma_server_does_not_lock_storage(tmp_path: Path, fast_engine, chroma_server):
    host, port = chroma_server
    write(tmp_path / "docs" / "a.md", ENGLISH)
    settings = make_settings(tmp_path, fast_engine, chroma_host=host, chroma_port=port, collection="shared")
    with TestClient(create_app(settings)):
        summary = ingest_folder(tmp_path / "docs", settings).summary  # while the service runs
    assert summary is not None
    assert summary.added == 1


def test_unreachable_chroma_server_is_a_clear_error(tmp_path: Path, fast_engine):
    settings = make_settings(tmp_path, fast_engine, chroma_host="127.0.0.1", chroma_port=free_port())
    write(tmp_path / "docs" / "a.md", ENGLISH)
    from rag.errors import StoreUnavailable

    with pytest.raises(StoreUnavailable, match="Chroma server"):
        ingest_folder(tmp_path / "docs", settings)
