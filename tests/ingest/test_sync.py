"""Incremental sync against the deterministic engine: embedding calls are counted at the server."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest

from ingest.manifest import Manifest
from ingest.run import ingest_folder
from rag.errors import BadRequest, EmbeddingModelMismatch
from rag.index.chroma import ChromaStore
from tests.support.helpers import CHINESE, ENGLISH, engine_requests, make_settings, write


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    root = tmp_path / "docs"
    write(root / "a.md", "# Cooling\n\n" + ENGLISH * 3)
    write(root / "sub" / "b.txt", CHINESE * 2)
    write(root / "c.html", "<html><body><h1>Parts</h1><p>Part PN-4471-B fits pump two.</p></body></html>")
    return root


def stored_sources(settings) -> dict[str, int]:
    return dict(ChromaStore.open(settings).sources())


def test_first_ingest_stores_every_file(tmp_path, docs, fast_engine):
    settings = make_settings(tmp_path, fast_engine)
    result = ingest_folder(docs, settings)
    assert result.summary is not None
    assert (result.summary.added, result.summary.failed) == (3, 0)
    assert set(stored_sources(settings)) == {"a.md", "sub/b.txt", "c.html"}
    manifest = Manifest.load(settings.manifest_path)
    assert manifest.embed_model == "all-minilm"
    assert manifest.embed_dim == 384
    assert sum(len(e.chunk_ids) for e in manifest.files.values()) == ChromaStore.open(settings).count()


def test_unchanged_folder_makes_zero_embedding_calls(tmp_path, docs, fast_engine):
    settings = make_settings(tmp_path, fast_engine)
    ingest_folder(docs, settings)
    before = engine_requests(fast_engine)
    result = ingest_folder(docs, settings)
    assert engine_requests(fast_engine) == before
    assert result.summary is not None
    assert (result.summary.unchanged, result.summary.chunks_written) == (3, 0)


def test_touched_but_identical_file_is_not_reembedded(tmp_path, docs, fast_engine):
    settings = make_settings(tmp_path, fast_engine)
    ingest_folder(docs, settings)
    st = (docs / "a.md").stat()
    os.utime(docs / "a.md", ns=(st.st_atime_ns, st.st_mtime_ns + 10_000_000_000))
    before = engine_requests(fast_engine)
    result = ingest_folder(docs, settings)
    assert engine_requests(fast_engine) == before
    assert result.summary is not None
    assert result.summary.unchanged == 3


def test_changed_file_replaces_its_chunks(tmp_path, docs, fast_engine):
    settings = make_settings(tmp_path, fast_engine)
    ingest_folder(docs, settings)
    write(docs / "c.html", "<p>Part PN-9000-Z replaced the old part in March.</p>")
    result = ingest_folder(docs, settings)
    assert result.summary is not None
    assert result.summary.updated == 1
    texts = [r.text for r in ChromaStore.open(settings).all_records()]
    assert any("PN-9000-Z" in t for t in texts)
    assert not any("PN-4471-B" in t for t in texts)


def test_editing_one_paragraph_reembeds_only_the_new_text(tmp_path, fast_engine):
    root = tmp_path / "docs"
    paragraphs = [f"Paragraph {i} talks about topic number {i} in some detail. " * 12 for i in range(6)]
    write(root / "long.md", "\n\n".join(paragraphs))
    settings = make_settings(tmp_path, fast_engine)
    first = ingest_folder(root, settings).summary
    paragraphs[5] = "A brand new closing paragraph about something else entirely."
    write(root / "long.md", "\n\n".join(paragraphs))
    second = ingest_folder(root, settings).summary
    assert first is not None
    assert second is not None
    assert second.chunks_reused > 0
    assert second.chunks_written < first.chunks_written


def test_deleted_file_chunks_are_removed(tmp_path, docs, fast_engine):
    settings = make_settings(tmp_path, fast_engine)
    ingest_folder(docs, settings)
    (docs / "sub" / "b.txt").unlink()
    result = ingest_folder(docs, settings)
    assert result.summary is not None
    assert result.summary.deleted == 1
    assert "sub/b.txt" not in stored_sources(settings)
    assert "sub/b.txt" not in Manifest.load(settings.manifest_path).files


def test_renamed_file_is_not_reembedded(tmp_path, docs, fast_engine):
    settings = make_settings(tmp_path, fast_engine)
    ingest_folder(docs, settings)
    count = ChromaStore.open(settings).count()
    (docs / "a.md").rename(docs / "renamed.md")
    before = engine_requests(fast_engine)
    result = ingest_folder(docs, settings)
    assert engine_requests(fast_engine) == before
    assert result.summary is not None
    assert (result.summary.renamed, result.summary.deleted) == (1, 0)
    sources = stored_sources(settings)
    assert "renamed.md" in sources
    assert "a.md" not in sources
    assert ChromaStore.open(settings).count() == count


def test_dry_run_prints_the_plan_and_touches_nothing(tmp_path, docs, fast_engine):
    settings = make_settings(tmp_path, fast_engine)
    ingest_folder(docs, settings)
    manifest_before = settings.manifest_path.read_bytes()
    write(docs / "new.md", "A new file about the cafeteria menu.")
    write(docs / "c.html", "<p>changed</p>")
    (docs / "sub" / "b.txt").unlink()
    before = engine_requests(fast_engine)
    result = ingest_folder(docs, settings, dry_run=True)
    assert result.summary is None
    assert sorted(result.plan.lines()) == ["add     new.md", "delete  sub/b.txt", "update  c.html"]
    assert engine_requests(fast_engine) == before
    assert settings.manifest_path.read_bytes() == manifest_before
    assert "sub/b.txt" in stored_sources(settings)


def test_dry_run_lists_a_rename_once_not_also_as_a_delete(tmp_path, docs, fast_engine):
    settings = make_settings(tmp_path, fast_engine)
    ingest_folder(docs, settings)
    (docs / "a.md").rename(docs / "moved.md")
    result = ingest_folder(docs, settings, dry_run=True)
    assert result.plan.lines() == ["rename  a.md -> moved.md"]


def test_a_no_change_ingest_keeps_the_dimension_so_the_next_edit_goes_in(tmp_path, docs, fast_engine):
    settings = make_settings(tmp_path, fast_engine)
    ingest_folder(docs, settings)
    ingest_folder(docs, settings)  # nothing to embed: the dimension on record must survive it
    assert Manifest.load(settings.manifest_path).embed_dim == 384
    with (docs / "a.md").open("a", encoding="utf-8") as fh:
        fh.write("\nOne more line about the cooling loop.\n")
    result = ingest_folder(docs, settings)
    assert result.summary is not None
    assert (result.summary.updated, result.summary.failed) == (1, 0)
    assert Manifest.load(settings.manifest_path).embed_dim == 384


def test_a_manifest_saved_with_an_unknown_dimension_is_not_a_mismatch(tmp_path, docs, fast_engine):
    # What a no-change ingest wrote before this was fixed: the model's name with `embed_dim: null`.
    settings = make_settings(tmp_path, fast_engine)
    ingest_folder(docs, settings)
    manifest = Manifest.load(settings.manifest_path)
    manifest.embed_dim = None
    manifest.save(settings.manifest_path)
    write(docs / "new.md", "A new file about the cafeteria menu.")
    result = ingest_folder(docs, settings)
    assert result.summary is not None
    assert result.summary.added == 1
    assert Manifest.load(settings.manifest_path).embed_dim == 384


def test_bad_file_is_reported_and_the_rest_completes(tmp_path, docs, fast_engine):
    settings = make_settings(tmp_path, fast_engine)
    ingest_folder(docs, settings)
    write(docs / "broken.pdf", b"%PDF-1.4\n this is not really a pdf")
    write(docs / "a.md", "# Cooling\n\nThe loop now uses glycol.")
    result = ingest_folder(docs, settings)
    assert result.summary is not None
    assert [s for s, _ in result.summary.failures] == ["broken.pdf"]
    assert "broken.pdf" in result.summary.failures[0][1]
    assert result.summary.updated == 1
    assert set(stored_sources(settings)) == {"a.md", "sub/b.txt", "c.html"}


def test_a_changed_file_that_now_fails_keeps_its_old_chunks(tmp_path, docs, fast_engine):
    settings = make_settings(tmp_path, fast_engine)
    ingest_folder(docs, settings)
    old = stored_sources(settings)["a.md"]
    write(docs / "a.md", b"\x00\x01\x02 binary now")
    result = ingest_folder(docs, settings)
    assert result.summary is not None
    assert [s for s, _ in result.summary.failures] == ["a.md"]
    assert stored_sources(settings)["a.md"] == old


def test_other_embedding_model_is_refused_with_the_rebuild_command(tmp_path, docs, fast_engine):
    ingest_folder(docs, make_settings(tmp_path, fast_engine))
    other = make_settings(tmp_path, fast_engine, embed_model="nomic-embed-text")
    with pytest.raises(EmbeddingModelMismatch) as err:
        ingest_folder(docs, other)
    assert "all-minilm" in err.value.message
    assert "nomic-embed-text" in err.value.message
    assert "rag ingest DIR --rebuild" in err.value.message


def test_rebuild_starts_over(tmp_path, docs, fast_engine):
    settings = make_settings(tmp_path, fast_engine)
    ingest_folder(docs, settings)
    result = ingest_folder(docs, settings, rebuild=True)
    assert result.summary is not None
    assert result.summary.added == 3


def test_chunker_settings_change_rechunks_everything(tmp_path, docs, fast_engine):
    ingest_folder(docs, make_settings(tmp_path, fast_engine))
    result = ingest_folder(docs, make_settings(tmp_path, fast_engine, chunk_size=64, chunk_overlap=8))
    assert result.summary is not None
    assert result.summary.updated == 3


def test_chunk_the_model_rejects_as_too_long_is_split_not_truncated(tmp_path, fast_engine):
    # Chunks of ~1,000 estimated tokens exceed the model's 256-token context: with truncate: false
    # the server refuses them, and ingest must split until every piece fits, losing no text.
    root = tmp_path / "docs"
    text = " ".join(f"Sentence number {i} describes valve {i} of the cooling loop." for i in range(120))
    write(root / "long.txt", text)
    settings = make_settings(tmp_path, fast_engine, chunk_size=1000, chunk_overlap=0)
    summary = ingest_folder(root, settings).summary
    assert summary is not None
    assert summary.failed == 0
    records = ChromaStore.open(settings).all_records()
    pieces = sorted(((r.metadata, r.text) for r in records), key=lambda m: m[0]["start"])
    assert len(pieces) > 3
    assert all(len(doc.split()) <= 256 for _, doc in pieces)
    for meta, doc in pieces:
        assert text[meta["start"] : meta["end"]] == doc
    covered = "".join(text[a["start"] : b["start"]] for (a, _), (b, _) in itertools.pairwise(pieces))
    assert covered + pieces[-1][1] == text


def test_file_that_disappears_mid_run_is_reported_and_the_rest_goes_in(tmp_path, docs, fast_engine):
    from ingest.sync import Syncer, plan_sync
    from rag.ollama import Embedder

    settings = make_settings(tmp_path, fast_engine)
    store = ChromaStore.open(settings)
    manifest = Manifest.load(settings.manifest_path)
    plan = plan_sync(docs, settings, manifest)
    (docs / "c.html").unlink()  # gone between the plan and its loading
    store.ensure("all-minilm", 384)
    syncer = Syncer(settings, store, Embedder(settings), docs, manifest, dim=384)
    summary = syncer.run(plan)
    assert [s for s, _ in summary.failures] == ["c.html"]
    assert "disappeared" in summary.failures[0][1]
    assert set(stored_sources(settings)) == {"a.md", "sub/b.txt"}


def test_missing_and_empty_folders_are_clear_errors(tmp_path, fast_engine):
    settings = make_settings(tmp_path, fast_engine)
    with pytest.raises(BadRequest, match="does not exist"):
        ingest_folder(tmp_path / "nope", settings)
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadRequest, match="no supported files"):
        ingest_folder(tmp_path / "empty", settings)


def test_batches_stay_full_across_files_and_nothing_is_sent_twice(tmp_path, fast_engine):
    """Chunks queue across file boundaries: every embed call but the last carries a full batch."""
    root = tmp_path / "docs"
    for i in range(13):  # a few chunks per file, so file ends rarely meet batch ends
        write(root / f"f{i:02d}.md", f"# Unit {i}\n\n" + ENGLISH * (1 + i % 3))
    settings = make_settings(tmp_path, fast_engine, chunk_size=64, chunk_overlap=8, embed_batch_size=8)
    before = engine_requests(fast_engine)
    summary = ingest_folder(root, settings).summary
    assert summary is not None
    calls = engine_requests(fast_engine) - before
    chunks = sum(len(e.chunk_ids) for e in Manifest.load(settings.manifest_path).files.values())
    assert chunks == summary.chunks_written > 8 * 3
    assert summary.embed_calls == -(-chunks // 8)  # ceil: full batches, then one partial at most
    assert calls == summary.embed_calls + 1  # and the one dimension probe of a first ingest
    assert summary.added == 13


def test_the_manifest_log_is_replayed_and_compacted(tmp_path, docs, fast_engine):
    """Files are committed as lines of an append-only log; the snapshot absorbs them at the end of a run."""
    settings = make_settings(tmp_path, fast_engine)
    ingest_folder(docs, settings)
    log = settings.manifest_path.with_suffix(".log")
    assert not log.exists()  # compacted into the snapshot
    manifest = Manifest.load(settings.manifest_path)
    entry, html = manifest.files.pop("a.md"), manifest.files["c.html"]
    manifest.save(settings.manifest_path)
    manifest.append(settings.manifest_path, [entry], ["c.html"])
    with log.open("ab") as fh:
        fh.write(b'{"log": "torn by a kill')  # a line cut short: ignored
    again = Manifest.load(settings.manifest_path)
    assert set(again.files) == {"a.md", "sub/b.txt"}
    # A new snapshot makes older lines void: a kill between writing it and removing the log replays nothing.
    stale = log.read_bytes()
    again.files["c.html"] = html
    again.save(settings.manifest_path)
    log.write_bytes(stale)  # its line deletes c.html, but was written under the previous snapshot
    assert set(Manifest.load(settings.manifest_path).files) == {"a.md", "sub/b.txt", "c.html"}


def test_a_store_that_cannot_be_opened_fails_the_ingest_with_its_path_and_records_nothing(tmp_path, docs, fast_engine):
    """`rag ingest` opens Chroma on a thread while the first files load and embed; an error opening it is
    still the ingest's error (at the first write), with the path, and no file is recorded as ingested."""
    from rag.errors import StoreUnavailable

    settings = make_settings(tmp_path, fast_engine)
    settings.chroma_path.parent.mkdir(parents=True)
    settings.chroma_path.write_text("not a folder", encoding="utf-8")
    with pytest.raises(StoreUnavailable, match="cannot open the store at") as err:
        ingest_folder(docs, settings)
    assert str(settings.chroma_path) in err.value.message
    assert not Manifest.load(settings.manifest_path).files
    settings.chroma_path.unlink()
    result = ingest_folder(docs, settings)  # once the path is free, the same folder goes in whole
    assert result.summary is not None
    assert result.summary.added == 3
