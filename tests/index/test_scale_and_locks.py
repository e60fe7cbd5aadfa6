"""Scale (deterministic engine) and the one-writer rule, across real processes."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import httpx

from ingest.run import ingest_folder
from rag.index.chroma import ChromaStore, Record
from tests.support.helpers import free_port, make_settings, write
from tests.support.servers import wait_http
from tests.test_cli import rag


def test_upsert_past_chromas_max_batch_is_split(tmp_path, fast_engine):
    store = ChromaStore.open(make_settings(tmp_path, fast_engine))
    store.ensure("all-minilm", 8)
    n = store.max_batch + 700
    rng = random.Random(1)
    records = [Record(f"id{i}", f"text {i}", {"source": "x.md"}) for i in range(n)]
    store.upsert(records, [[rng.random() for _ in range(8)] for _ in range(n)])
    assert store.count() == n


def test_folder_of_more_than_6000_chunks_ingests_completely(tmp_path, fast_engine):
    root = tmp_path / "big"
    rng = random.Random(7)
    words = ("pump", "valve", "lever", "reactor", "cooling", "spare", "part", "inspection", "binder", "operator")
    for f in range(160):
        sentences = [" ".join(rng.choice(words) for _ in range(14)).capitalize() + "." for _ in range(120)]
        write(root / f"d{f // 40}" / f"file{f:03}.txt", " ".join(sentences))
    settings = make_settings(tmp_path, fast_engine, chunk_size=48, chunk_overlap=0, embed_batch_size=64)
    summary = ingest_folder(root, settings).summary
    assert summary is not None
    assert summary.failed == 0
    assert summary.added == 160
    count = ChromaStore.open(settings).count()
    assert count > 6000
    assert summary.chunks_written == count


def hold_lock(tmp_path: Path) -> subprocess.Popen:
    code = (
        "import sys, time\n"
        "from rag.config import Settings\n"
        "from rag.index.lock import store_lock\n"
        f"s = Settings(_env_file=None, storage_dir={str(tmp_path / 'storage')!r})\n"
        "with store_lock(s, 'rag ingest'):\n"
        "    print('locked', flush=True)\n"
        "    time.sleep(120)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_second_writer_fails_fast_with_what_to_do(tmp_path, fast_engine):
    write(tmp_path / "docs" / "a.md", "Some text about pumps.")
    holder = hold_lock(tmp_path)
    try:
        result = rag(tmp_path, fast_engine, "ingest", str(tmp_path / "docs"), timeout=60)
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode == 2
    assert "in use by rag ingest" in result.stderr
    assert "RAG_CHROMA_HOST" in result.stderr
    assert rag(tmp_path, fast_engine, "ingest", str(tmp_path / "docs")).returncode == 0


def test_serve_process_answers_and_blocks_a_concurrent_ingest(tmp_path, fast_engine):
    write(tmp_path / "docs" / "a.md", "The pumps are inspected every Tuesday by the night shift.")
    assert rag(tmp_path, fast_engine, "ingest", str(tmp_path / "docs")).returncode == 0
    port = free_port()
    env = {**os.environ, "OLLAMA_HOST": fast_engine, "RAG_STORAGE_DIR": str(tmp_path / "storage")}
    server = subprocess.Popen(
        [sys.executable, "-m", "rag", "serve", "--port", str(port)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{base}/health", server, "rag serve")
        r = httpx.post(f"{base}/ask", json={"question": "When are the pumps inspected?"}, timeout=60)
        assert r.status_code == 200
        assert r.json()["sources"][0]["source"] == "a.md"
        blocked = rag(tmp_path, fast_engine, "ingest", str(tmp_path / "docs"), timeout=60)
        assert blocked.returncode == 2
        assert "in use by rag serve" in blocked.stderr
    finally:
        server.terminate()
        server.wait(timeout=30)
