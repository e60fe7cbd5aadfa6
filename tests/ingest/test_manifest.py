"""The manifest's snapshot and log keep every field of every file entry."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from ingest.manifest import FileEntry, Manifest


def entry(source: str, outdated: bool) -> FileEntry:
    return FileEntry(source=source, size=12, mtime_ns=34, sha256="ab" * 32, chunk_ids=[f"{source}-1", f"{source}-2"],
                     pages=3, outdated=outdated)


def test_every_field_survives_the_log_and_the_snapshot(tmp_path: Path) -> None:
    path = tmp_path / "manifest.json"
    manifest = Manifest(chunker={"size": 200}, embed_model="all-minilm", embed_dim=384)
    manifest.save(path)
    put = [entry("a.md", outdated=True), entry("b.pdf", outdated=False)]
    manifest.append(path, put, delete=[])
    assert {f.name for f in fields(FileEntry)} == set(vars(put[0])), "a FileEntry field this test does not set"

    from_log = Manifest.load(path)
    assert from_log.files == {e.source: e for e in put}
    from_log.save(path)
    assert Manifest.load(path).files == {e.source: e for e in put}


def test_a_later_entry_is_not_changed_by_the_one_written_before(tmp_path: Path) -> None:
    path = tmp_path / "manifest.json"
    manifest = Manifest()
    manifest.save(path)
    first = entry("a.md", outdated=False)
    manifest.append(path, [first], delete=[])
    first.chunk_ids.append("changed-after-commit")  # the caller's list, after the line was written
    assert Manifest.load(path).files["a.md"].chunk_ids == ["a.md-1", "a.md-2"]
