"""Documents updated while serving: POST /sync over HTTP while questions are answered, `rag ingest` handing its
job to the running server (--via-server), and `rag serve --watch`. The real `rag serve` process, on an engine
slowed down (RAG_ENGINE_EMBED_DELAY) so that a sync lasts long enough to ask questions during it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from ingest.run import ingest_folder
from tests.support.helpers import ENGLISH, make_settings, write
from tests.support.servers import running_engine, serve_process

KEY, ADMIN = "user-key", "admin-key"
AUTH, ADMIN_AUTH = {"Authorization": f"Bearer {KEY}"}, {"Authorization": f"Bearer {ADMIN}"}
NEW_FACT = "The zebra crossing code for the loading dock is ZX-9931."


def seed(root: Path) -> None:
    write(root / "cooling.md", "# Cooling\n\n" + ENGLISH * 2)
    write(root / "spares.md", "Spare parts are kept in building seven. " * 5)


def add_documents(root: Path) -> None:
    write(root / "dock.md", "# Loading dock\n\n" + NEW_FACT + " Trucks arrive on Mondays. " * 3)
    for n in range(8):  # more files: the sync lasts several embedding calls
        write(root / f"notes/note-{n}.md", f"Note {n}. " + ENGLISH.replace("seven", f"number {n + 10}") * 3)


def wait_for_job(base: str, job_id: str, limit: float = 300) -> dict:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        job = httpx.get(f"{base}/sync/{job_id}", headers=AUTH, timeout=30).json()
        if job["state"] != "running":
            return job
        time.sleep(0.2)
    raise AssertionError(f"sync {job_id} still running after {limit}s")


def serve_env(root: Path) -> dict[str, str]:
    # Two chunks an embedding call: the sync makes many slow calls, and questions wait their turn between them.
    return {"RAG_API_KEYS": KEY, "RAG_ADMIN_KEYS": ADMIN, "RAG_DOCS_DIR": str(root), "RAG_EMBED_BATCH_SIZE": "2"}


def test_a_sync_over_http_while_20_questions_are_answered(tmp_path):
    root = tmp_path / "docs"
    seed(root)
    with running_engine(RAG_ENGINE_EMBED_DELAY="0.3") as engine:
        ingest_folder(root, make_settings(tmp_path, engine))
        add_documents(root)
        with serve_process(tmp_path / "storage", engine, **serve_env(root)) as (base, _log):
            started = httpx.post(f"{base}/sync", headers=ADMIN_AUTH, timeout=30)
            second = httpx.post(f"{base}/sync", headers=ADMIN_AUTH, timeout=30)
            job_id = started.json()["id"]

            def ask(n: int) -> tuple[httpx.Response, float]:
                r = httpx.post(f"{base}/ask", json={"question": f"When are the pumps inspected? ({n})"},
                               headers=AUTH, timeout=300)
                return r, time.time()

            with ThreadPoolExecutor(20) as pool:
                answers, answered_at = zip(*pool.map(ask, range(20)), strict=True)
            during = httpx.get(f"{base}/sync/{job_id}", headers=AUTH, timeout=30).json()
            job = wait_for_job(base, job_id)
            found = httpx.post(f"{base}/retrieve", json={"question": "ZX-9931 loading dock", "top_k": 1},
                               headers=AUTH, timeout=60).json()
            answer = httpx.post(f"{base}/ask", json={"question": "What is the code for the loading dock?"},
                                headers=AUTH, timeout=60).json()
            metrics = httpx.get(f"{base}/metrics", headers=AUTH, timeout=30).text
    assert started.status_code == 202, started.text
    assert started.json()["url"] == f"/sync/{job_id}"
    assert second.status_code == 409
    assert second.json()["error"]["code"] == "sync_running"
    assert job_id in second.json()["error"]["message"]
    assert [r.status_code for r in answers] == [200] * 20
    assert during["total"] == 9
    assert job["state"] == "done", job
    assert min(answered_at) < job["finished"]  # answered while the sync ran, not after it
    assert {f["source"]: (f["action"], f["state"]) for f in job["files"]}["dock.md"] == ("add", "done")
    assert all(f["state"] == "done" for f in job["files"])
    assert job["summary"]["added"] == 9
    assert job["summary"]["unchanged"] == 2
    assert job["summary"]["failed"] == 0
    assert found["sources"][0]["source"] == "dock.md"
    assert "dock.md" in [s["source"] for s in answer["sources"]]
    assert 'rag_ingest_runs_total{trigger="api"} 1.0' in metrics
    assert "rag_indexed_documents 11.0" in metrics
    assert 'route="/sync/{job_id}"' in metrics


def rag(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rag", *args], env={**os.environ, **env}, cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_rag_ingest_offers_the_running_server_and_hands_it_the_job(tmp_path, fast_engine):
    root = tmp_path / "docs"
    seed(root)
    ingest_folder(root, make_settings(tmp_path, fast_engine))
    add_documents(root)
    env = {"OLLAMA_HOST": fast_engine, "RAG_STORAGE_DIR": str(tmp_path / "storage"), **serve_env(root)}
    with serve_process(tmp_path / "storage", fast_engine, **serve_env(root)) as (base, _log):
        refused = rag("ingest", str(root), env=env, cwd=tmp_path)
        handed = rag("ingest", str(root), "--via-server", base, env=env, cwd=tmp_path)
        not_admin = rag("ingest", str(root), "--via-server", base, env={**env, "RAG_ADMIN_KEYS": ""}, cwd=tmp_path)
        docs = httpx.get(f"{base}/documents", headers=AUTH, timeout=30).json()
    assert refused.returncode == 2
    assert f"rag ingest DIR --via-server {base}" in refused.stderr
    assert handed.returncode == 0, handed.stderr
    assert "add     dock.md" in handed.stdout
    assert "files: 9 added, 0 updated, 0 renamed, 2 unchanged, 0 deleted, 0 failed" in handed.stdout
    assert not_admin.returncode == 2
    assert "403" in not_admin.stderr
    assert "RAG_ADMIN_KEYS" in not_admin.stderr
    assert "dock.md" in [d["source"] for d in docs["documents"]]


def test_rag_serve_watch_syncs_a_changed_folder(tmp_path, fast_engine):
    root = tmp_path / "docs"
    seed(root)
    ingest_folder(root, make_settings(tmp_path, fast_engine))
    with serve_process(tmp_path / "storage", fast_engine, "--watch", str(root), RAG_WATCH_DEBOUNCE="0.3",
                       RAG_API_KEYS=KEY) as (base, log):
        write(root / "dock.md", NEW_FACT)
        (root / "spares.md").unlink()
        sources: list[str] = []
        for _ in range(600):  # until the watcher has synced (or the bound: 120 s)
            sources = [d["source"] for d in httpx.get(f"{base}/documents", headers=AUTH, timeout=30).json()[
                "documents"]]
            if "dock.md" in sources and "spares.md" not in sources:
                break
            time.sleep(0.2)
        metrics = httpx.get(f"{base}/metrics", headers=AUTH, timeout=30).text
        logged = log.read_text()
    assert sorted(sources) == ["cooling.md", "dock.md"]
    assert 'rag_ingest_runs_total{trigger="watch"}' in metrics
    assert "watching" in logged
