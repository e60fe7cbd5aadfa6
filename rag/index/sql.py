"""What the index's SQLite stores (chunk texts, keyword tokens) share: selecting rows by a long list of ids."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any

IN_CLAUSE = 500  # ids per `IN (...)`: below SQLite's variable limit on every build


def select_by_id(db: sqlite3.Connection, table: str, columns: str, ids: Sequence[str]) -> Iterator[tuple[Any, ...]]:
    """`SELECT columns FROM table WHERE id IN ids`, in parts SQLite accepts; ids it lacks are left out."""
    ids = list(ids)
    for start in range(0, len(ids), IN_CLAUSE):
        part = ids[start : start + IN_CLAUSE]
        yield from db.execute(f"SELECT {columns} FROM {table} WHERE id IN ({','.join('?' * len(part))})", part)
