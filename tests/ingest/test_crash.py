"""Crash consistency: Chroma, the keyword index and the manifest agree after `kill -9` at any moment, what an
interrupted run left is swept, and `rag check` finds (and `--repair` fixes) any disagreement."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from ingest.journal import Journal
from ingest.manifest import Manifest
from ingest.reconcile import check_store, reconcile
from ingest.run import ingest_folder, open_keywords
from ingest.sync import Syncer, plan_sync
from rag.index.bm25 import load_index
from rag.index.chroma import ChromaStore, Record
from rag.index.token_store import TOKENS_FILE, KeywordWriter, TokenStore
from rag.ollama import Embedder
from rag.serve.app import create_app
from tests.support.helpers import CHINESE, ENGLISH, make_settings, write
from tests.support.servers import running_engine
from tests.test_cli import rag

EMBED_DELAY = "0.2"  # seconds per /api/embed call: an ingest slow enough to be killed in the middle
SMALL_CHUNKS = {"chunk_size": 48, "chunk_overlap": 8, "embed_batch_size": 2}
SMALL_CHUNKS_ENV = {"RAG_CHUNK_SIZE": "48", "RAG_CHUNK_OVERLAP": "8", "RAG_EMBED_BATCH_SIZE": "2"}
WORDS = ("pump", "valve", "lever", "reactor", "cooling", "spare", "part", "inspection", "binder", "operator",
         "filter", "gasket", "pressure", "alarm", "shift", "log", "manual", "building", "seven", "Tuesday")


@pytest.fixture(scope="module")
def slow_engine() -> Iterator[str]:
    with running_engine("deterministic", RAG_ENGINE_EMBED_DELAY=EMBED_DELAY) as url:
        yield url


def state(settings: Any) -> dict[str, Any]:
    """Everything the three stores hold, read back from disk."""
    manifest = Manifest.load(settings.manifest_path)
    owned = [i for entry in manifest.files.values() for i in entry.chunk_ids]
    store = ChromaStore.open(settings)
    tokens = TokenStore(settings.keyword_path / TOKENS_FILE)
    try:
        token_ids = tokens.ids()
    finally:
        tokens.close()
    return {
        "manifest": {s: e.chunk_ids for s, e in manifest.files.items()},
        "owned": owned,
        "chroma": {r.id: (r.text, r.metadata["source"]) for r in store.all_records()},
        "chroma_count": store.count(),
        "texts": store.texts.ids(),
        "tokens": token_ids,
        "bm25": load_index(settings.keyword_path).ids,
        "journal": settings.journal_path.exists(),
    }


def assert_consistent(s: dict[str, Any]) -> None:
    owned = set(s["owned"])
    assert len(s["owned"]) == len(owned), "a chunk listed twice in the manifest"
    assert set(s["chroma"]) == owned, (len(set(s["chroma"]) - owned), len(owned - set(s["chroma"])))
    assert s["chroma_count"] == len(owned)
    assert s["tokens"] == owned
    assert s["texts"] == owned, "a chunk text without its chunk, or a chunk without its text"
    assert sorted(s["bm25"]) == sorted(owned)
    assert not s["journal"]


def kill_after_write(settings: Any, root: Path, source: str) -> None:
    """Leave the store as a kill between writing a file's chunks and recording it would: the chunks are in
    Chroma (journaled first), the manifest does not name them. Driven through the syncer's own steps."""
    store = ChromaStore.open(settings)
    manifest = Manifest.load(settings.manifest_path)
    plan = plan_sync(root, settings, manifest)
    store.ensure("all-minilm", 384)
    syncer = Syncer(settings, store, Embedder(settings), root, manifest, dim=384)
    job = syncer._prepare(next(s for s in plan.work if s.source == source), plan)
    assert job is not None
    batch = [(job, chunk) for chunk in job.chunks]
    syncer._embed_batch(batch)
    syncer._write(batch)
    keywords = open_keywords(settings, store, syncer.manifest, fresh=False)
    keywords.put(job.chunks, [])
    keywords.close()


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    root = tmp_path / "docs"
    write(root / "a.md", "# Cooling\n\n" + ENGLISH * 3)
    write(root / "b.txt", CHINESE * 2)
    return root


def test_chunks_written_before_a_kill_are_swept_when_their_file_is_gone(tmp_path, docs, fast_engine):
    settings = make_settings(tmp_path, fast_engine)
    ingest_folder(docs, settings)
    write(docs / "new.md", "The new pump arrives on Friday. " * 20)
    kill_after_write(settings, docs, "new.md")
    assert "new.md" in ChromaStore.open(settings).sources()
    (docs / "new.md").unlink()
    summary = ingest_folder(docs, settings).summary
    assert summary is not None
    assert summary.orphans_removed > 0
    after = state(settings)
    assert_consistent(after)
    assert {source for _, source in after["chroma"].values()} == {"a.md", "b.txt"}


def test_a_file_whose_write_did_not_finish_is_redone_with_the_vectors_already_stored(tmp_path, docs, fast_engine):
    settings = make_settings(tmp_path, fast_engine)
    ingest_folder(docs, settings)
    write(docs / "new.md", "The new pump arrives on Friday. " * 20)
    kill_after_write(settings, docs, "new.md")
    summary = ingest_folder(docs, settings).summary
    assert summary is not None
    assert (summary.added, summary.embed_calls, summary.chunks_written) == (1, 0, 0)
    assert_consistent(state(settings))


def test_reconcile_at_start_up_removes_what_a_kill_left(tmp_path, docs, fast_engine):
    settings = make_settings(tmp_path, fast_engine)
    ingest_folder(docs, settings)
    write(docs / "new.md", "The new pump arrives on Friday. " * 20)
    kill_after_write(settings, docs, "new.md")
    assert reconcile(settings) > 0
    assert_consistent(state(settings))
    assert reconcile(settings) == 0  # nothing journaled: one stat() and done


def test_texts_written_before_a_kill_cut_off_their_vectors_are_swept(tmp_path, docs, fast_engine):
    """The store writes a chunk's text before its vector: a kill between the two leaves texts (journaled)
    that Chroma does not know. The sweep removes them, and the file is redone in full."""
    settings = make_settings(tmp_path, fast_engine)
    ingest_folder(docs, settings)
    write(docs / "new.md", "The new pump arrives on Friday. " * 20)
    store = ChromaStore.open(settings)
    ghost_ids = ["cut-off-1", "cut-off-2"]
    Journal(settings.journal_path).add("new.md", ghost_ids)
    store.texts.put((i, "a text whose vector was never written", None) for i in ghost_ids)
    assert store.present(ghost_ids) == set(ghost_ids)
    assert reconcile(settings) == 2
    assert_consistent(state(settings))
    result = ingest_folder(docs, settings)
    assert result.summary is not None
    assert result.summary.added == 1
    assert_consistent(state(settings))


def test_rag_serve_removes_what_a_kill_left_before_it_answers(tmp_path, docs, fast_engine):
    settings = make_settings(tmp_path, fast_engine)
    ingest_folder(docs, settings)
    write(docs / "new.md", "The new pump arrives on Friday. " * 20)
    kill_after_write(settings, docs, "new.md")
    (docs / "new.md").unlink()
    with TestClient(create_app(settings)) as client:
        listed = {d["source"] for d in client.get("/documents").json()["documents"]}
        assert listed == {"a.md", "b.txt"}
        hits = client.post("/retrieve", json={"question": "When does the new pump arrive?", "top_k": 10}).json()
        assert all(s["source"] != "new.md" for s in hits["sources"])
    assert_consistent(state(settings))


def test_check_finds_and_repairs_every_kind_of_disagreement(tmp_path, docs, fast_engine):
    settings = make_settings(tmp_path, fast_engine)
    ingest_folder(docs, settings)
    assert check_store(settings).agree
    store = ChromaStore.open(settings)
    # A chunk no file owns (what a kill left before the journal existed), a chunk lost from Chroma, and a
    # chunk lost from the keyword index.
    store.upsert([Record("ghost", "A ghost of a deleted file.", {"source": "ghost.md"})], [[0.1] * 384])
    a_ids = Manifest.load(settings.manifest_path).files["a.md"].chunk_ids
    store.delete([a_ids[0]])
    writer = KeywordWriter(settings)
    writer.delete([a_ids[-1]])
    writer.close()
    # A chunk text nobody's, and a chunk whose text is gone.
    store.texts.put([("stray", "A text without a chunk.", None)])
    b_id = Manifest.load(settings.manifest_path).files["b.txt"].chunk_ids[0]
    store.texts.delete([b_id])
    found = check_store(settings).before
    assert not found.agree
    assert found.chroma_orphans == {"ghost": "ghost.md"}
    assert found.text_orphans == {"ghost", "stray"}
    assert found.text_missing == {b_id: "b.txt"}
    assert found.chroma_missing == {a_ids[0]: "a.md"}
    assert found.token_missing == {a_ids[-1]}
    assert found.keyword_index.startswith("the BM25 index is behind its tokens")
    repaired = check_store(settings, fix=True)
    assert repaired.agree
    assert repaired.after is not None
    assert repaired.after.outdated == ["a.md", "b.txt"]
    summary = ingest_folder(docs, settings).summary
    assert summary is not None
    assert summary.updated == 2
    again = check_store(settings).before
    assert again.agree
    assert again.outdated == []
    assert_consistent(state(settings))


def test_rag_check_exit_codes_and_repair(tmp_path, docs, fast_engine):
    assert rag(tmp_path, fast_engine, "ingest", str(docs)).returncode == 0
    ok = rag(tmp_path, fast_engine, "check")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "ok: Chroma, the chunk texts, the keyword index and the manifest agree" in ok.stdout
    # The manifest forgets b.txt: its chunks are left in both indexes with no owner.
    path = tmp_path / "storage" / "manifest-documents.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    lost = len(data["files"].pop("b.txt")["chunk_ids"])
    path.write_text(json.dumps(data), encoding="utf-8")
    bad = rag(tmp_path, fast_engine, "check")
    assert bad.returncode == 1
    assert f"chroma:    {lost} chunks no file owns (b.txt: {lost})" in bad.stdout
    assert f"keywords:  {lost} chunks no file owns" in bad.stdout
    assert "fix it with: rag check --repair" in bad.stdout
    fixed = rag(tmp_path, fast_engine, "check", "--repair")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert f"repaired:  removed {lost} chunks no file owns from Chroma" in fixed.stdout
    assert rag(tmp_path, fast_engine, "check").returncode == 0
    assert "1 added" in rag(tmp_path, fast_engine, "ingest", str(docs)).stdout


def test_an_interrupted_first_run_keeps_every_file_it_finished(tmp_path, slow_engine, fast_engine):
    files = 40  # at 2 calls in flight of EMBED_DELAY each: about 4 s
    root = tmp_path / "docs"
    for i in range(files):
        write(root / f"f{i}.md", f"File {i} is about valve {i}. It is inspected every Tuesday.")
    # One file per embedding call: each file waits its own EMBED_DELAY, so the kill lands mid-run (finished
    # files are committed at least every WRITE_EVERY seconds: several times in this run).
    proc = ingest_process(tmp_path, slow_engine, root, RAG_EMBED_BATCH_SIZE="1")
    manifest = tmp_path / "storage" / "manifest-documents.json"
    deadline = time.monotonic() + 120
    # Files are committed as lines of the manifest's log; Manifest.load reads the snapshot and the log.
    while len(Manifest.load(manifest).files if manifest.exists() else {}) < 2:
        assert proc.poll() is None, "the ingest ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = len(Manifest.load(manifest).files)
    assert finished < files
    again = rag(tmp_path, fast_engine, "ingest", str(root))
    assert again.returncode == 0, again.stderr
    assert f"{files - finished} added, 0 updated, 0 renamed, {finished} unchanged" in again.stdout
    assert_consistent(state(make_settings(tmp_path, fast_engine)))


def ingest_process(tmp_path: Path, url: str, root: Path, **env: str) -> subprocess.Popen[bytes]:
    environ = {**os.environ, "OLLAMA_HOST": url, "RAG_STORAGE_DIR": str(tmp_path / "storage"), **env}
    return subprocess.Popen(
        [sys.executable, "-m", "rag", "ingest", str(root)], env=environ, cwd=tmp_path,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


# -- kill -9 at random moments -----------------------------------------------------------------------


class Corpus:
    """A folder of text files that a seeded generator edits, renames, deletes and adds to."""

    def __init__(self, root: Path, rng: random.Random) -> None:
        self.root, self.rng, self.made = root, rng, 0
        for _ in range(10):
            self.add()

    def paragraph(self) -> str:
        words = self.rng.choices(WORDS, k=self.rng.randint(30, 70))
        return " ".join(" ".join(words[i : i + 10]).capitalize() + "." for i in range(0, len(words), 10))

    def files(self) -> list[Path]:
        return sorted(p for p in self.root.rglob("*") if p.is_file())

    def add(self) -> str:
        self.made += 1
        folder = self.root / self.rng.choice(["", "sub", "sub/deeper"])
        body = "\n\n".join(self.paragraph() for _ in range(self.rng.randint(1, 4)))
        if self.rng.random() < 0.2:
            body += "\n\n" + CHINESE
        write(folder / f"note{self.made}.md", body)
        return "add"

    def mutate(self) -> list[str]:
        ops = [self.rng.choice(["edit", "edit", "rename", "delete", "add", "touch"])
               for _ in range(self.rng.randint(1, 4))]
        return [getattr(self, op)() if op == "add" or len(self.files()) > 8 else self.add() for op in ops]

    def edit(self) -> str:
        path = self.rng.choice(self.files())
        parts = path.read_text(encoding="utf-8").split("\n\n")
        parts[self.rng.randrange(len(parts))] = self.paragraph()
        if self.rng.random() < 0.5:
            parts.append(self.paragraph())
        path.write_text("\n\n".join(parts), encoding="utf-8")
        return "edit"

    def rename(self) -> str:
        path = self.rng.choice(self.files())
        self.made += 1
        target = self.root / self.rng.choice(["", "sub", "moved"]) / f"renamed{self.made}.md"
        target.parent.mkdir(parents=True, exist_ok=True)
        path.rename(target)
        return "rename"

    def delete(self) -> str:
        self.rng.choice(self.files()).unlink()
        return "delete"

    def touch(self) -> str:
        path = self.rng.choice(self.files())
        path.write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
        return "touch"


def changed(paths: list[Path], before: list[tuple[int, int]]) -> bool:
    return [_stamp(p) for p in paths] != before


def _stamp(path: Path) -> tuple[int, int]:
    try:
        st = path.stat()
    except FileNotFoundError:
        return (0, 0)
    return st.st_size, st.st_mtime_ns


@pytest.mark.slow
def test_kill_9_at_random_moments_leaves_what_a_clean_ingest_makes(tmp_path, slow_engine, fast_engine):
    rng = random.Random(20240610)
    root = tmp_path / "docs"
    corpus = Corpus(root, rng)
    storage = tmp_path / "storage"
    watched = [storage / "manifest-documents.json", storage / "manifest-documents.log",
               storage / "journal-documents.log", storage / "keyword-documents" / "CURRENT.json"]
    kills, rounds, mid_run = 0, 0, 0
    started = time.monotonic()
    while kills < 20:
        rounds += 1
        assert rounds <= 80, f"only {kills} kills landed in {rounds} rounds"
        if rounds > 1:
            corpus.mutate()
        before = [_stamp(p) for p in watched]
        proc = ingest_process(tmp_path, slow_engine, root, **SMALL_CHUNKS_ENV)
        # Most kills land once the run has written something; one in five may land before (start-up).
        early = rng.random() < 0.2
        while not early and proc.poll() is None and not changed(watched, before):
            time.sleep(0.01)
        try:
            proc.wait(timeout=rng.uniform(0.0, 2.5))
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
            mid_run += changed(watched, before)
    killing = time.monotonic() - started
    incremental = make_settings(tmp_path, fast_engine, **SMALL_CHUNKS)
    summary = ingest_folder(root, incremental).summary
    assert summary is not None
    assert summary.failed == 0
    clean = make_settings(tmp_path, fast_engine, storage_dir=tmp_path / "clean", **SMALL_CHUNKS)
    ingest_folder(root, clean)
    got, want = state(incremental), state(clean)
    assert_consistent(got)
    assert_consistent(want)
    assert got["manifest"] == want["manifest"]
    assert got["chroma"] == want["chroma"]
    assert check_store(incremental).agree
    print(f"{kills} kills ({mid_run} after the run had written) in {rounds} rounds, {killing:.0f} s; "
          f"{len(want['owned'])} chunks in "
          f"{len(want['manifest'])} files; the final run removed {summary.orphans_removed} orphans")


def test_a_damaged_manifest_is_one_error_line_and_rebuild_recovers(tmp_path, docs, fast_engine):
    from tests.test_cli import rag

    assert rag(tmp_path, fast_engine, "ingest", str(docs)).returncode == 0
    manifest = tmp_path / "storage" / "manifest-documents.json"
    manifest.write_text('{"version": 1, "files": {"a.md": {"truncated', encoding="utf-8")
    damaged = rag(tmp_path, fast_engine, "ingest", str(docs))
    assert damaged.returncode == 2
    assert "Traceback" not in damaged.stderr
    assert f"error: {manifest} cannot be read" in damaged.stderr
    assert "rag ingest DIR --rebuild" in damaged.stderr
    rebuilt = rag(tmp_path, fast_engine, "ingest", "--rebuild", str(docs))
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "2 added" in rebuilt.stdout
