"""`rag ingest --via-server URL`: hand the sync to the running `rag serve` that holds the store, and follow it."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from rag.config import Settings
from rag.errors import RagError

POLL = 0.5  # seconds between two looks at the job


def sync_via_server(url: str, settings: Settings, folder: Path, echo: Callable[[str], None]) -> bool:
    """POST /sync with an admin key (RAG_ADMIN_KEYS), print each file as it is done and the summary line.

    Returns whether some file failed; raises RagError when the job could not start or stopped."""
    keys = sorted(settings.key_set(admin=True)) or sorted(settings.key_set())
    headers = {"Authorization": f"Bearer {keys[0]}"} if keys else {}
    base = url.rstrip("/")
    with httpx.Client(base_url=base, headers=headers, timeout=30) as http:
        job = _json(http, "POST", "/sync", base)
        echo(f"sync {job['id']} started on {base}, of its folder {job['folder']}")
        if Path(job["folder"]).resolve() != folder.resolve():
            echo(f"note: the server syncs its own RAG_DOCS_DIR ({job['folder']}), not {folder} as named here")
        shown: set[str] = set()
        while True:
            job = _json(http, "GET", f"/sync/{job['id']}", base)
            for f in job["files"]:
                if f["state"] in ("processed", "done", "failed") and f["source"] not in shown:
                    shown.add(f["source"])
                    echo(f"{f['action']:<7} {f['source']}")
            if job["state"] != "running":
                break
            time.sleep(POLL)
    if job["state"] == "failed":
        raise RagError(f"the sync on {base} stopped: {job['error']}")
    s = job["summary"]
    for failure in s["failures"]:
        echo(f"failed: {failure['reason']}")
    echo(f"files: {s['added']} added, {s['updated']} updated, {s['renamed']} renamed, {s['unchanged']} unchanged, "
         f"{s['deleted']} deleted, {s['failed']} failed, {s['skipped']} skipped; chunks: {s['chunks_written']} "
         f"written, {s['chunks_reused']} reused; embedding calls: {s['embed_calls']}; {s['seconds']:.1f}s")
    return bool(s["failed"])


def _json(http: httpx.Client, method: str, path: str, base: str) -> dict[str, Any]:
    try:
        reply = http.request(method, path)
    except httpx.HTTPError as exc:
        raise RagError(f"cannot reach rag serve at {base} ({exc}); is it running there?") from exc
    try:
        body: dict[str, Any] = reply.json()
    except ValueError:
        body = {}
    if reply.status_code >= 400:
        error = body.get("error")
        message = error.get("message", str(error)) if isinstance(error, dict) else str(error or reply.text[:200])
        raise RagError(f"rag serve at {base} answered {reply.status_code} to {method} {path}: {message}")
    return body
