"""The manifest: what was ingested from which file, so a re-run only does the work that changed.

It is a JSON snapshot plus an append-only log beside it (`manifest-<collection>.log`): committing a file
appends one fsynced line instead of rewriting a snapshot that grows with the folder, so per-file
bookkeeping stays O(1) on a long ingest. `save` compacts: a new snapshot, then the log goes. Each
snapshot carries a random `log_id` and a log line counts only under the snapshot it names, so a kill
between writing the snapshot and removing the log never replays old lines over newer state.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rag.errors import StoreDamaged

MANIFEST_VERSION = 1
COMPACT_AFTER = 1000  # log lines beyond the number of files before `append` compacts on its own


def log_path(path: Path) -> Path:
    """The append-only log that goes with the snapshot at `path` (same name, `.log`)."""
    return path.with_suffix(".log")


@dataclass
class FileEntry:
    source: str
    size: int
    mtime_ns: int
    sha256: str
    chunk_ids: list[str]
    pages: int | None = None
    outdated: bool = False  # its chunks need redoing (another chunker, or `rag check --repair` lost some)


@dataclass
class Manifest:
    """Everything the store holds, file by file, and the settings that made it."""

    chunker: dict[str, Any] = field(default_factory=dict)
    embed_model: str | None = None
    embed_dim: int | None = None
    files: dict[str, FileEntry] = field(default_factory=dict)
    log_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    log_lines: int = 0  # lines appended since the snapshot

    @classmethod
    def load(cls, path: Path) -> Manifest:
        if not path.exists():
            return cls()
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            version = data.get("version")
            if version != MANIFEST_VERSION:
                raise ValueError(f"manifest version {version}, expected {MANIFEST_VERSION}")
            files = {k: FileEntry(**v) for k, v in data.get("files", {}).items()}
            manifest = cls(data.get("chunker", {}), data.get("embed_model"), data.get("embed_dim"), files)
            manifest.log_id = str(data.get("log_id") or manifest.log_id)
            manifest._replay(log_path(path))
            return manifest
        except (OSError, ValueError, TypeError, AttributeError) as exc:  # unreadable, not JSON, wrong shape
            raise StoreDamaged(
                f"{path} cannot be read ({exc}); nothing was changed. Rebuild the index from your folder "
                "with: rag ingest DIR --rebuild"
            ) from None

    def _replay(self, log: Path) -> None:
        try:
            lines = log.read_bytes().splitlines()
        except FileNotFoundError:
            return
        for line in lines:
            try:
                record = json.loads(line)
                if record["log"] != self.log_id:
                    continue  # written under an older snapshot, which already holds it
                puts = [FileEntry(**e) for e in record.get("put", [])]
                dels = [str(s) for s in record.get("delete", [])]
            except (ValueError, KeyError, TypeError):
                continue  # torn by a kill: the commit it announced had not happened
            for source in dels:
                self.files.pop(source, None)
            self.files.update((e.source, e) for e in puts)
            self.log_lines += 1

    def append(self, path: Path, put: list[FileEntry], delete: list[str]) -> None:
        """Record committed files (and sources they replace) in one fsynced log line: durable when this returns.

        The snapshot at `path` must exist (`save` once before the first append of a run)."""
        record = {"log": self.log_id, "delete": delete, "put": [_entry_dict(e) for e in put]}
        for source in delete:
            self.files.pop(source, None)
        self.files.update((e.source, e) for e in put)
        with log_path(path).open("ab") as fh:
            fh.write(json.dumps(record, ensure_ascii=False).encode("utf-8") + b"\n")
            fh.flush()
            os.fsync(fh.fileno())
        self.log_lines += 1
        if self.log_lines > len(self.files) + COMPACT_AFTER:
            self.save(path)

    @staticmethod
    def remove(path: Path) -> None:
        """Forget everything: the snapshot and its log."""
        path.unlink(missing_ok=True)
        log_path(path).unlink(missing_ok=True)

    def save(self, path: Path) -> None:
        """Write a snapshot atomically (a crash mid-write leaves the previous one whole), then drop the log."""
        self.log_id = uuid.uuid4().hex
        data = {
            "version": MANIFEST_VERSION,
            "log_id": self.log_id,
            "chunker": self.chunker,
            "embed_model": self.embed_model,
            "embed_dim": self.embed_dim,
            "files": {k: _entry_dict(v) for k, v in sorted(self.files.items())},
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".manifest-", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, ensure_ascii=False, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        log_path(path).unlink(missing_ok=True)
        self.log_lines = 0

    def owned(self) -> set[str]:
        """Every chunk id some file owns."""
        return {i for entry in self.files.values() for i in entry.chunk_ids}

    def by_hash(self) -> dict[str, list[FileEntry]]:
        out: dict[str, list[FileEntry]] = {}
        for entry in self.files.values():
            out.setdefault(entry.sha256, []).append(entry)
        return out


def _entry_dict(entry: FileEntry) -> dict[str, Any]:
    # By hand, not dataclasses.asdict: asdict deep-copies every chunk id, and that was a tenth of
    # `rag ingest`'s own CPU (and most of a snapshot's time at 100k chunks).
    data: dict[str, Any] = {"source": entry.source, "size": entry.size, "mtime_ns": entry.mtime_ns,
                            "sha256": entry.sha256, "chunk_ids": entry.chunk_ids, "pages": entry.pages}
    if entry.outdated:  # the usual case stays out of the file
        data["outdated"] = True
    return data


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
