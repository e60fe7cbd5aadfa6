"""The write journal: chunk ids that Chroma or the keyword index may hold although no manifest entry owns them.

Ingest appends to it (and fsyncs) before every write to either index and before the manifest lets go of
chunks, so after a kill at any instant the indexes hold exactly the manifest's chunks plus journaled
ones. The next ingest (or `rag serve` starting) removes the journaled chunks nobody owns, then clears it.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)

EVERYTHING = "*"  # a rebuild started: any chunk may be stale, so the sweep lists both indexes whole


class Journal:
    """An append-only file, one JSON line per intent: {"source": ..., "ids": [...]}.

    Appending keeps a long first ingest linear; a line torn by a kill is ignored, because the write it
    announced had not started.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.ids: set[str] = set()
        self.source_of: dict[str, str] = {}  # chunk id -> the file that journaled it, for messages
        self.everything = False
        self._read()

    def _read(self) -> None:
        try:
            lines = self.path.read_bytes().splitlines()
        except FileNotFoundError:
            return
        for line in lines:
            try:
                record = json.loads(line)
                source, ids = str(record["source"]), [str(i) for i in record["ids"]]
            except (ValueError, KeyError, TypeError):
                log.debug("journal %s: skipping a torn line", self.path)
                continue
            self.everything |= source == EVERYTHING
            self.ids.update(ids)
            self.source_of.update(dict.fromkeys(ids, source))

    @property
    def pending(self) -> bool:
        return bool(self.ids) or self.everything

    def add(self, source: str, ids: Iterable[str]) -> None:
        """Record that `source` is about to write (or drop) these chunk ids; durable when this returns."""
        self.add_many([(source, ids)])

    def add_many(self, intents: Iterable[tuple[str, Iterable[str]]]) -> None:
        """`add` for several files at once: one line each, one fsync for all (a write spans many files)."""
        records: list[dict[str, object]] = []
        for source, ids in intents:
            if new := sorted(set(ids) - self.ids):
                records.append({"source": source, "ids": new})
                self.ids.update(new)
                self.source_of.update(dict.fromkeys(new, source))
        if records:
            self._append(records)

    def mark_everything(self) -> None:
        self._append([{"source": EVERYTHING, "ids": []}])
        self.everything = True

    def _append(self, records: list[dict[str, object]]) -> None:
        created = not self.path.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("ab") as fh:
            fh.write(b"".join(json.dumps(r, ensure_ascii=False).encode("utf-8") + b"\n" for r in records))
            fh.flush()
            os.fsync(fh.fileno())
        if created:
            _fsync_dir(self.path.parent)

    def clear(self) -> None:
        """Everything journaled is now owned or gone from both indexes."""
        self.path.unlink(missing_ok=True)
        _fsync_dir(self.path.parent)
        self.ids, self.source_of, self.everything = set(), {}, False


def _fsync_dir(directory: Path) -> None:
    """Make a file's creation or removal durable, not only its bytes."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
