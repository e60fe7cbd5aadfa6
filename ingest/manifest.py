"""The manifest: what was ingested from which file, so a re-run only does the work that changed."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rag.errors import StoreDamaged

MANIFEST_VERSION = 1


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
            return cls(data.get("chunker", {}), data.get("embed_model"), data.get("embed_dim"), files)
        except (OSError, ValueError, TypeError, AttributeError) as exc:  # unreadable, not JSON, wrong shape
            raise StoreDamaged(
                f"{path} cannot be read ({exc}); nothing was changed. Rebuild the index from your folder "
                "with: rag ingest DIR --rebuild"
            ) from None

    def save(self, path: Path) -> None:
        """Write atomically: a crash mid-write leaves the previous manifest whole."""
        data = {
            "version": MANIFEST_VERSION,
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

    def owned(self) -> set[str]:
        """Every chunk id some file owns."""
        return {i for entry in self.files.values() for i in entry.chunk_ids}

    def by_hash(self) -> dict[str, list[FileEntry]]:
        out: dict[str, list[FileEntry]] = {}
        for entry in self.files.values():
            out.setdefault(entry.sha256, []).append(entry)
        return out


def _entry_dict(entry: FileEntry) -> dict[str, Any]:
    data = asdict(entry)
    if not entry.outdated:  # the usual case stays out of the file
        del data["outdated"]
    return data


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
