"""Chunk texts live beside Chroma (rag.index.texts); a store made when Chroma held them still reads them."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from fastapi.testclient import TestClient

from ingest.run import ingest_folder
from rag.config import Settings
from rag.index.chroma import ChromaStore
from rag.serve.app import create_app
from tests.support.helpers import ENGLISH, make_settings, write


def ingested(tmp_path: Path, url: str) -> tuple[Path, Settings, ChromaStore]:
    docs = tmp_path / "docs"
    write(docs / "a.md", "# Cooling\n\n" + ENGLISH * 3)
    settings = make_settings(tmp_path, url)
    ingest_folder(docs, settings)
    return docs, settings, ChromaStore.open(settings)


def test_chroma_holds_no_documents_and_every_read_has_the_text(tmp_path, fast_engine):
    _, _, store = ingested(tmp_path, fast_engine)
    got = store.collection.get(include=["documents"])
    assert got["ids"]
    assert all(d is None for d in got["documents"])
    texts = store.texts.get(got["ids"])
    assert set(texts) == set(got["ids"])
    assert all(texts.values())
    records = store.records(got["ids"])
    assert {r.id: r.text for r in records} == texts
    assert {r.text for r in store.records_of("a.md")} == set(texts.values())
    assert {r.text for r in store.all_records()} == set(texts.values())


def test_a_store_whose_texts_are_chroma_documents_still_answers_with_them(tmp_path, fast_engine):
    """Rewrite an ingested store into the old layout: texts as Chroma documents, none beside it."""
    docs, settings, store = ingested(tmp_path, fast_engine)
    got = store.collection.get(include=["embeddings"])
    ids = got["ids"]
    texts = store.texts.get(ids)
    store.collection.update(ids=ids, documents=[texts[i] for i in ids], embeddings=got["embeddings"])
    store.texts.clear()

    old = ChromaStore.open(settings)
    assert {r.id: r.text for r in old.records(ids)} == texts
    assert {r.text for r in old.records_of("a.md")} == set(texts.values())
    with TestClient(create_app(settings)) as client:
        hits = client.post("/retrieve", json={"question": "How is the reactor cooled?", "top_k": 3}).json()
        assert hits["sources"]
        assert all(s["text"] in texts.values() for s in hits["sources"])
    # A later ingest of a changed file writes the new layout beside the old.
    write(docs / "b.md", "# Backups\n\nThe backup runs every night at two.")
    ingest_folder(docs, settings)
    new = ChromaStore.open(settings)
    b_records = new.records_of("b.md")
    assert b_records
    assert all(new.texts.get([r.id]) for r in b_records)
    assert {r.text for r in new.records_of("a.md")} == set(texts.values())


def test_chroma_holds_only_the_source_and_every_read_has_all_the_metadata(tmp_path, fast_engine):
    _, _, store = ingested(tmp_path, fast_engine)
    got = store.collection.get(include=["metadatas"])
    assert got["metadatas"]
    assert all(m == {"source": "a.md"} for m in got["metadatas"])
    records = store.records(got["ids"])
    for r in records:
        keys = {"source", "position", "part", "start", "end", "content_hash", "tokens", "file_sha256"}
        assert set(r.metadata) >= keys
        assert r.metadata["source"] == "a.md"
        assert r.metadata["end"] - r.metadata["start"] == len(r.text)
    assert {r.id: r.metadata for r in store.records_of("a.md")} == {r.id: r.metadata for r in records}


def test_a_store_whose_metadata_is_all_in_chroma_still_reads_and_reuses_it(tmp_path, fast_engine):
    """Rewrite an ingested store into the layout before metadata moved: every key in Chroma, and a texts
    table without the metadata column. Reads merge nothing, and an edit still reuses the stored vectors."""
    docs, settings, store = ingested(tmp_path, fast_engine)
    full = {r.id: r for r in store.all_records()}
    ids = list(full)
    store.collection.update(ids=ids, metadatas=[full[i].metadata for i in ids])
    store.texts.close()
    settings.texts_path.unlink()
    with sqlite3.connect(settings.texts_path) as db:
        db.execute("CREATE TABLE texts (id TEXT PRIMARY KEY, text TEXT NOT NULL)")
        db.executemany("INSERT INTO texts VALUES (?, ?)", [(i, full[i].text) for i in ids])

    old = ChromaStore.open(settings)
    assert {r.id: r.metadata for r in old.records(ids)} == {i: full[i].metadata for i in ids}
    old.texts.close()
    # An edit at the end of the file keeps the chunks before it: their vectors are found by content hash.
    write(docs / "a.md", "# Cooling\n\n" + ENGLISH * 3 + "\n\nThe pumps are checked every spring.")
    result = ingest_folder(docs, settings)
    assert result.summary is not None
    assert result.summary.chunks_reused >= len(ids) - 1
    new = ChromaStore.open(settings)
    records = new.records_of("a.md")
    assert all(r.metadata["end"] - r.metadata["start"] == len(r.text) for r in records)
    assert any("pumps are checked" in r.text for r in records)
