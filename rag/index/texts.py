"""Chunk texts, kept in SQLite beside the manifest rather than as Chroma documents.

Chroma indexes every document it holds for full-text search (a trigram index, written even when no
query uses it): that was over half of ingest's own CPU and about half of the store's size. We never
search Chroma's documents, so the texts live here, keyed by chunk id, and Chroma keeps the vectors. A
store made before this keeps its texts in Chroma; ChromaStore reads them there.

Each text also carries the chunk's metadata but for its source (offsets, page, hashes, token count), as
JSON: Chroma keeps only what a query filters on, since every metadata key it holds is a row it indexes
(a write cost 0.08 ms more per chunk with all eight keys there, about a tenth of ingest's own CPU). A
text put before that has no metadata here (NULL); its metadata is all in Chroma.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from rag.index.sql import select_by_id

_SCHEMA = "CREATE TABLE IF NOT EXISTS texts (id TEXT PRIMARY KEY, text TEXT NOT NULL, meta TEXT)"


class TextStore:
    """id -> text. One connection per store, shared by the threads of `rag serve`; readers in other
    processes see every committed write (WAL), and a write is on disk when `put` returns."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, timeout=60)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")  # the manifest names these chunks once put returns
            self._db.execute(_SCHEMA)
            if "meta" not in {row[1] for row in self._db.execute("PRAGMA table_info(texts)")}:
                self._db.execute("ALTER TABLE texts ADD COLUMN meta TEXT")  # a store made before metadata moved
            self._db.commit()
        except sqlite3.DatabaseError:
            self._db.close()
            raise

    def put(self, rows: Iterable[tuple[str, str, dict[str, Any] | None]]) -> None:
        """(id, text, metadata kept with the text, or None) rows."""
        encoded = ((i, text, None if meta is None else json.dumps(meta, ensure_ascii=False, separators=(",", ":")))
                   for i, text, meta in rows)
        with self._lock, self._db:
            self._db.executemany("INSERT OR REPLACE INTO texts (id, text, meta) VALUES (?, ?, ?)", encoded)

    def get(self, ids: Sequence[str]) -> dict[str, str]:
        """The texts held for these ids (an id without one is left out)."""
        return {row[0]: row[1] for row in self._select("id, text", ids)}

    def entries(self, ids: Sequence[str]) -> dict[str, tuple[str, dict[str, Any]]]:
        """The text and the metadata kept with it ({} for a text put without) of each id held."""
        return {row[0]: (row[1], json.loads(row[2]) if row[2] else {}) for row in self._select("id, text, meta", ids)}

    def present(self, ids: Sequence[str]) -> set[str]:
        return {row[0] for row in self._select("id", ids)}

    def ids(self) -> set[str]:
        with self._lock:
            return {row[0] for row in self._db.execute("SELECT id FROM texts")}

    def _select(self, columns: str, ids: Sequence[str]) -> list[tuple[str, ...]]:
        with self._lock:
            return list(select_by_id(self._db, "texts", columns, ids))

    def delete(self, ids: Sequence[str]) -> None:
        with self._lock, self._db:
            self._db.executemany("DELETE FROM texts WHERE id = ?", [(i,) for i in ids])

    def clear(self) -> None:
        with self._lock, self._db:
            self._db.execute("DELETE FROM texts")

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM texts").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
