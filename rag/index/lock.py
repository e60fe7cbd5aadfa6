"""One writer per store: a lock file that fails fast instead of waiting on Chroma's SQLite lock."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from rag.config import Settings
from rag.errors import StoreLocked


@contextmanager
def store_lock(settings: Settings, purpose: str) -> Iterator[None]:
    """Hold the store for `purpose` ("ingest", "serve", ...) or raise StoreLocked at once.

    The embedded Chroma store is not process-safe: a second process can block on its SQLite lock
    for minutes, so we refuse up front and say who holds it.
    """
    path = settings.lock_path
    path.parent.mkdir(parents=True, exist_ok=True)
    owner = path.with_suffix(".owner")
    lock = FileLock(str(path), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise StoreLocked(_held_message(settings, owner)) from None
    try:
        owner.write_text(f"{purpose} (pid {os.getpid()})", encoding="utf-8")
        yield
    finally:
        owner.unlink(missing_ok=True)
        lock.release()


def _held_message(settings: Settings, owner: Path) -> str:
    try:
        who = owner.read_text(encoding="utf-8").strip() or "another rag process"
    except OSError:
        who = "another rag process"
    # A serving process names its address ("rag serve at http://..."): it can do the ingest itself.
    handover = ""
    if who.startswith("rag serve at "):
        url = who.removeprefix("rag serve at ").split(" ", 1)[0]
        handover = f"; or let it sync its documents folder: rag ingest DIR --via-server {url}"
    return (
        f"the store {settings.storage_dir} is in use by {who}; stop that process and retry, "
        "or run a Chroma server (`chroma run --path DIR`) and set RAG_CHROMA_HOST so several "
        f"processes can share it{handover}"
    )
