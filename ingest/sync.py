"""Incremental sync of a folder into the store: plan from the manifest, then embed only what changed.

Crash safety rests on two rules, kept at every instant: every chunk the manifest owns is in Chroma and in
the keyword index (written before the manifest names it, deleted after the manifest forgets it), and every
other chunk either index holds is in the journal (recorded before it is written or forgotten). A run ends,
and the next one starts, by sweeping journaled chunks that nobody owns.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ingest.chunking import Chunk, chunk_document, split_chunk
from ingest.journal import Journal
from ingest.loaders import LoadedDocument, LoadError, LoadLimits, load, source_of, walk
from ingest.manifest import FileEntry, Manifest, sha256_file
from ingest.pdf_workers import PdfWorkers
from ingest.reconcile import sweep
from rag.config import Settings
from rag.errors import BadRequest, InputTooLong
from rag.index.chroma import ChromaStore, Record
from rag.index.token_store import KeywordWriter
from rag.ollama import Embedder

log = logging.getLogger(__name__)

CHUNKER_VERSION = 1
MAX_SPLIT_DEPTH = 6
# Embedding calls in flight at once: while the model computes one batch the next is already queued at
# the server, so the model never waits for us to send, parse a response or write to the indexes (a new
# batch is sent before each write, not after it).
IN_FLIGHT = 2
# Files loaded ahead of their turn, by LOADERS threads sharing up to LOADERS PDF extraction worker
# processes (ingest.pdf_workers: the second starts only when a slow PDF holds the first), so reading a PDF
# never stalls the queue of batches.
LOAD_AHEAD = 4
LOADERS = 2
# Chunks written to Chroma per call: each call costs Chroma a fixed ~50 ms with documents (measured: 766
# Chinese chunks took 2.3 s in calls of 32, 0.8 s in calls of 256), so vectors gather across embed batches,
# for WRITE_EVERY seconds at most: what a kill can lose is bounded by that much of the model's time.
WRITE_BATCH = 256
WRITE_EVERY = 1.0


def chunker_settings(settings: Settings) -> dict[str, Any]:
    return {"version": CHUNKER_VERSION, "chunk_size": settings.chunk_size, "overlap": settings.chunk_overlap}


@dataclass
class FileState:
    source: str
    path: Path
    size: int
    mtime_ns: int
    sha256: str = ""


@dataclass
class Plan:
    """What a sync will do, file by file. `renamed` maps new source -> old source."""

    added: list[FileState] = field(default_factory=list)
    changed: list[FileState] = field(default_factory=list)
    renamed: dict[str, str] = field(default_factory=dict)
    unchanged: list[FileState] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (source, reason): could not list or read

    @property
    def work(self) -> list[FileState]:
        return self.added + self.changed

    def lines(self) -> list[str]:
        out = [f"add     {f.source}" for f in self.added if f.source not in self.renamed]
        out += [f"rename  {self.renamed[f.source]} -> {f.source}" for f in self.added if f.source in self.renamed]
        out += [f"update  {f.source}" for f in self.changed]
        out += [f"delete  {s}" for s in self.deleted if s not in self.renamed.values()]
        return out


@dataclass
class Summary:
    added: int = 0
    updated: int = 0
    renamed: int = 0
    unchanged: int = 0
    deleted: int = 0
    skipped: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    chunks_written: int = 0
    chunks_reused: int = 0
    embed_calls: int = 0
    chunks_tokenized: int = 0  # texts the keyword index tokenised; reused and unchanged chunks cost none
    orphans_removed: int = 0  # chunks an interrupted run left that no file owns any more
    pdf_workers: int = 0  # PDF extraction processes started (ingest.pdf_workers): LOADERS at most, per 200 PDFs
    seconds: float = 0.0

    @property
    def failed(self) -> int:
        return len(self.failures)


@dataclass
class _Job:
    """One file being (re)ingested: its chunks, the vectors found or made, and what it replaces."""

    state: FileState
    doc: LoadedDocument
    chunks: list[Chunk]
    vectors: dict[str, list[float]]
    stored: set[str]  # chunk ids already in the store with this very text: nothing to write
    replaces: list[str]  # sources whose chunks this file's chunks replace (itself, or a rename's origin)
    kind: str  # "added" | "updated" | "renamed"


def plan_sync(root: Path, settings: Settings, manifest: Manifest, follow_symlinks: bool = False) -> Plan:
    """Compare the folder with the manifest. Unchanged files cost a stat() and nothing more.

    What sits in a folder that cannot be listed is kept as it was: it is not there to compare.
    """
    found = walk(root, follow_symlinks)
    plan = Plan(skipped=[*found.hidden, *found.unsupported, *found.links])
    plan.unreadable = list(found.problems)
    same_chunker = manifest.chunker == chunker_settings(settings)
    seen: set[str] = set()
    for path in found.files:
        source = source_of(path, root)
        seen.add(source)
        try:
            st = path.stat()
            state = FileState(source, path, st.st_size, st.st_mtime_ns)
            entry = manifest.files.get(source)
            current = entry is not None and same_chunker and not entry.outdated
            if entry and current and (entry.size, entry.mtime_ns) == (state.size, state.mtime_ns):
                state.sha256 = entry.sha256
                plan.unchanged.append(state)
                continue
            state.sha256 = sha256_file(path)
        except OSError as exc:  # vanished or unreadable since the walk: report it, keep what is stored
            plan.unreadable.append((source, f"{source}: {exc.strerror or exc} (since the folder was listed)"))
            continue
        if entry and current and entry.sha256 == state.sha256:
            plan.unchanged.append(state)  # touched, not changed: only its mtime is refreshed
        elif entry:
            plan.changed.append(state)
        else:
            plan.added.append(state)
    hidden_by = tuple(found.unreadable)  # "folder/" prefixes
    plan.deleted = sorted(s for s in manifest.files if s not in seen and not s.startswith(hidden_by))
    _pair_renames(plan, manifest)
    return plan


def _pair_renames(plan: Plan, manifest: Manifest) -> None:
    """A new file with the bytes of a deleted one is a rename: its vectors move, nothing is embedded."""
    gone = {manifest.files[s].sha256: s for s in plan.deleted}
    for state in plan.added:
        old = gone.pop(state.sha256, None)
        if old is not None:
            plan.renamed[state.source] = old


class Syncer:
    """Carries out a plan: load, chunk, reuse or embed, write in batches, record in the manifest.

    Built with everything it needs: the folder, the manifest the plan was made against, the keyword
    writer (None: only the vector index is kept) and `dim`, the dimension of the vectors it will write
    (None when nothing is embedded): before its first write it creates the collection for the embedding
    model and `dim`, or checks that the existing one was built with them (`store.ensure`).
    """

    def __init__(
        self,
        settings: Settings,
        store: ChromaStore,
        embedder: Embedder,
        root: Path,
        manifest: Manifest,
        *,
        keywords: KeywordWriter | None = None,
        dim: int | None = None,
        progress: Callable[[int], None] = lambda n: None,
        pdf: PdfWorkers | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.embedder = embedder
        self.root = root
        self.manifest = manifest
        self.keywords = keywords
        self.dim = dim
        self._ensured = False
        self.progress = progress
        self.limits = LoadLimits(
            timeout_s=settings.file_timeout, memory_mb=settings.file_memory_mb, max_file_mb=settings.max_file_mb
        )
        self.pdf = pdf or pdf_workers(settings)
        self.journal = Journal(settings.journal_path)
        if unowned := self.journal.ids - self.manifest.owned():
            sources = sorted({self.journal.source_of[i] for i in unowned})
            log.info("an interrupted ingest left %d chunks no file owns (of %s); they are reused where they fit "
                     "and removed at the end", len(unowned), ", ".join(sources[:5]) + (", ..." * (len(sources) > 5)))
        self.summary = Summary()

    def run(self, plan: Plan) -> Summary:
        started = time.monotonic()
        s = self.summary
        s.unchanged, s.skipped = len(plan.unchanged), len(plan.skipped)
        s.failures += plan.unreadable
        self._adopt_chunker()
        self._refresh_unchanged(plan.unchanged)
        if plan.work:
            self._save()  # the snapshot the per-file log lines (Manifest.append) build on
        with ThreadPoolExecutor(IN_FLIGHT, thread_name_prefix="embed") as pool, self.pdf:
            _Pipeline(self, pool).run(plan)
        self._delete([d for d in plan.deleted if d not in plan.renamed.values()])
        self._save()
        self.sweep()
        s.pdf_workers = self.pdf.started
        if self.keywords:
            s.chunks_tokenized = self.keywords.tokenizer.calls
        s.seconds = time.monotonic() - started
        return s

    def sweep(self) -> None:
        """Remove journaled chunks no file owns from both indexes, rebuild BM25 once, clear the journal."""
        self.summary.orphans_removed += sweep(self.store, self.keywords, self.journal, self.manifest)

    def _adopt_chunker(self) -> None:
        """Record the chunker before the first file is committed, so a file finished before a kill counts
        as done next time; files chunked another way are marked outdated until they are redone."""
        current = chunker_settings(self.settings)
        if self.manifest.chunker != current:
            for entry in self.manifest.files.values():
                entry.outdated = True
            self.manifest.chunker = current

    # -- per file -----------------------------------------------------------------------------------

    def _load(self, state: FileState) -> LoadedDocument | LoadError:
        """The file's text, or why it cannot be read (returned, so a loader thread can hand it over)."""
        try:
            return load(state.path, self.root, self.limits, self.pdf)
        except LoadError as exc:
            return exc

    def _prepare(self, state: FileState, plan: Plan, loaded: LoadedDocument | LoadError | None = None) -> _Job | None:
        doc = self._load(state) if loaded is None else loaded
        if isinstance(doc, LoadError):
            # Nothing of this file's previous version is touched: what was stored stays stored.
            log.warning("%s", doc)
            self.summary.failures.append((state.source, str(doc)))
            return None
        chunks = chunk_document(doc, self.settings.chunk_size, self.settings.chunk_overlap)
        replaces = [src for src in (state.source, plan.renamed.get(state.source)) if src in self.manifest.files]
        donors = [i for src in replaces for i in self.manifest.files[src].chunk_ids]
        vectors, stored = self._reuse(chunks, donors)
        kind = "renamed" if state.source in plan.renamed else ("updated" if state.source in self.manifest.files
                                                                else "added")
        return _Job(state, doc, chunks, vectors, stored, replaces, kind)

    def _reuse(self, chunks: list[Chunk], donor_ids: list[str]) -> tuple[dict[str, list[float]], set[str]]:
        """Vectors we already have for these texts: same chunk id, or same content in the old version.

        This is what makes a rename, a re-run after an interruption, and an edit to one paragraph cost
        (almost) no embedding calls.
        """
        ids = {c.id for c in chunks}
        if not donor_ids and not self.journal.everything and self.journal.ids.isdisjoint(ids):
            # A chunk id names its file, so a file the manifest does not know has nothing stored under its
            # ids unless an interrupted run journaled them: no need to ask Chroma (a first ingest never does).
            return {}, set()
        wanted = ids | set(donor_ids)
        if not wanted or not self.store.exists():
            return {}, set()
        records, vectors = self.store.get_with_embeddings(sorted(wanted))
        by_hash = {r.metadata.get("content_hash"): v for r, v in zip(records, vectors, strict=True)}
        stored = {r.id for r in records if r.metadata.get("content_hash")}
        found = {c.id: by_hash[c.content_hash] for c in chunks if c.content_hash in by_hash}
        self.summary.chunks_reused += len(found)
        same = {c.id for c in chunks if c.id in stored}
        return found, same

    # -- embedding and writing ----------------------------------------------------------------------

    def _embed_batch(self, batch: list[tuple[_Job, Chunk]]) -> None:
        """Embed one batch here and now (the pipeline sends its batches from worker threads instead)."""
        try:
            vectors: list[list[float]] | None = self._embed([c.text for _, c in batch])
        except InputTooLong:
            vectors = None
        self._take(batch, vectors)

    def _take(self, batch: list[tuple[_Job, Chunk]], vectors: list[list[float]] | None) -> None:
        """Take a batch's vectors; `None`: the model refused an input, so find it and split only that one."""
        if vectors is None:
            for job, chunk in batch:
                self._embed_one(job, chunk, 0)
            return
        for (job, chunk), vec in zip(batch, vectors, strict=True):
            job.vectors[chunk.id] = vec

    def _embed_one(self, job: _Job, chunk: Chunk, depth: int) -> None:
        try:
            job.vectors[chunk.id] = self._embed([chunk.text])[0]
            return
        except InputTooLong:
            if depth >= MAX_SPLIT_DEPTH:
                raise
        pieces = split_chunk(chunk, _page_text(job.doc, chunk.page))
        log.info("%s: a chunk of about %d tokens is too long for %s; split in %d",
                 job.state.source, chunk.tokens, self.embedder.model, len(pieces))
        index = job.chunks.index(chunk)
        job.chunks[index : index + 1] = pieces
        for piece in pieces:
            self._embed_one(job, piece, depth + 1)

    def _embed(self, texts: list[str]) -> list[list[float]]:
        self.summary.embed_calls += 1
        return self.embedder.embed(texts)

    def _write(self, items: list[tuple[_Job, Chunk]]) -> None:
        items = [(j, c) for j, c in items if c.id in j.vectors and c.id not in j.stored]
        if not items:
            return
        if not self._ensured and self.dim is not None:
            self.store.ensure(self.embedder.model, self.dim)
            self._ensured = True
        jobs = {id(j): j for j, _ in items}.values()
        self.journal.add_many((job.state.source, [c.id for j, c in items if j is job]) for job in jobs)
        self.store.upsert([_record(j, c) for j, c in items], [j.vectors[c.id] for j, c in items])
        for job, chunk in items:
            job.stored.add(chunk.id)
        self.summary.chunks_written += len(items)

    def _commit(self, jobs: list[_Job]) -> None:
        """These files' new chunks are in Chroma: add their tokens, record the files (one log line), then
        drop what they replaced. Files finished by the same batch commit together: one fsync each step."""
        if not jobs:
            return
        for job in jobs:
            self._write([(job, c) for c in job.chunks])  # reused vectors under new ids (renames, moves)
        keep = {c.id for job in jobs for c in job.chunks}
        replaced = [src for job in jobs for src in job.replaces]
        old = [i for src in replaced for i in self.manifest.files[src].chunk_ids]
        stale = [i for i in old if i not in keep]
        # Mostly journaled already by _write: then this costs no write.
        self.journal.add_many(
            (job.state.source,
             [*(c.id for c in job.chunks),
              *(i for src in job.replaces for i in self.manifest.files[src].chunk_ids if i not in keep)])
            for job in jobs
        )
        if self.keywords:
            self.keywords.put([c for job in jobs for c in job.chunks], old)
        entries = []
        for job in jobs:
            st = job.state
            pages = max((p.number or 0 for p in job.doc.pages), default=0) or None
            entries.append(FileEntry(st.source, st.size, st.mtime_ns, st.sha256, [c.id for c in job.chunks], pages))
            setattr(self.summary, job.kind, getattr(self.summary, job.kind) + 1)
        self.manifest.append(self.settings.manifest_path, entries, replaced)
        self._drop(stale)

    def _delete(self, sources: list[str]) -> None:
        """Deleted files: journal their chunks, forget them in the manifest, then drop them from both indexes."""
        if not sources:
            return
        gone: list[str] = []
        self.journal.add_many((source, self.manifest.files[source].chunk_ids) for source in sources)
        for source in sources:
            gone += self.manifest.files.pop(source).chunk_ids
        self.summary.deleted += len(sources)
        self._save()
        self._drop(gone)

    def _drop(self, ids: list[str]) -> None:
        if self.keywords:
            self.keywords.delete(ids)
        self.store.delete(ids)

    def _refresh_unchanged(self, states: list[FileState]) -> None:
        for st in states:
            entry = self.manifest.files[st.source]
            entry.size, entry.mtime_ns = st.size, st.mtime_ns

    def _save(self) -> None:
        """A full snapshot of the manifest (it also compacts the log): at the start and the end of a run."""
        self.manifest.embed_model = self.embedder.model
        if self.dim is not None:  # nothing embedded this run: the dimension on record still holds
            self.manifest.embed_dim = self.dim
        self.manifest.save(self.settings.manifest_path)


class _Pipeline:
    """One run's flow: files are loaded and chunked here while earlier batches embed on worker threads.

    Chunks to embed queue up across files, so every call but the last carries a full batch; each chunk
    is sent once. Vectors are written WRITE_BATCH at a time, and after each write the files whose chunks all
    have vectors are committed, in plan order.
    """

    def __init__(self, syncer: Syncer, pool: ThreadPoolExecutor) -> None:
        self.syncer, self.pool = syncer, pool
        self.size = syncer.settings.embed_batch_size
        self.pending: deque[tuple[_Job, Chunk]] = deque()  # chunks waiting for a batch
        self.in_flight: deque[tuple[Future[list[list[float]]], list[tuple[_Job, Chunk]]]] = deque()
        self.waiting: deque[_Job] = deque()  # prepared files not committed yet, in plan order
        self.unwritten: list[tuple[_Job, Chunk]] = []  # embedded, waiting for a full write to Chroma
        self.oldest = 0.0  # when the first of `unwritten` came back

    def run(self, plan: Plan) -> None:
        with ThreadPoolExecutor(LOADERS, thread_name_prefix="load") as loaders:
            for state, loaded in self._loaded(plan.work, loaders):
                self._add(state, plan, loaded.result())
        while self.pending or self.in_flight:
            self._submit()
        self._flush()

    def _loaded(self, work: list[FileState], loaders: ThreadPoolExecutor) -> Iterator[tuple[FileState, Future[Any]]]:
        """Files in plan order, each loading LOAD_AHEAD files ahead of its turn (a PDF in a worker process)."""
        ahead: deque[tuple[FileState, Future[Any]]] = deque()
        for state in work:
            ahead.append((state, loaders.submit(self.syncer._load, state)))
            if len(ahead) > LOAD_AHEAD:
                yield ahead.popleft()
        yield from ahead

    def _add(self, state: FileState, plan: Plan, loaded: LoadedDocument | LoadError) -> None:
        """Chunk one loaded file, queue what it lacks for embedding, and send every batch that is full."""
        job = self.syncer._prepare(state, plan, loaded)
        self.syncer.progress(1)
        if job is None:
            return
        self.waiting.append(job)
        self.pending.extend((job, c) for c in job.chunks if c.id not in job.vectors)
        self._reap(block=False)
        while len(self.pending) >= self.size:
            self._submit()
        self._write_due()

    def _submit(self) -> None:
        """Send one batch (full unless it is the last), after making room among the calls in flight; then
        write what is due, so the model has the next batch queued while we write."""
        while len(self.in_flight) >= IN_FLIGHT or (self.in_flight and not self.pending):
            self._reap(block=True)
            if not self.pending and self.in_flight:
                self._flush()  # the last batches: write what is back while they compute, not after
        if self.pending:
            batch = [self.pending.popleft() for _ in range(min(self.size, len(self.pending)))]
            self.syncer.summary.embed_calls += 1
            self.in_flight.append((self.pool.submit(self.syncer.embedder.embed, [c.text for _, c in batch]), batch))
        self._write_due()

    def _reap(self, block: bool) -> None:
        """Take finished batches, oldest first (one at least when `block`)."""
        while self.in_flight and (block or self.in_flight[0][0].done()):
            future, batch = self.in_flight.popleft()
            try:
                vectors: list[list[float]] | None = future.result()
            except InputTooLong:
                vectors = None
            self.syncer._take(batch, vectors)
            if not self.unwritten:
                self.oldest = time.monotonic()
            self.unwritten += batch
            block = False

    def _write_due(self) -> None:
        """Write and commit once WRITE_BATCH chunks have gathered or the oldest has waited WRITE_EVERY seconds
        (and at once when nothing waits for a write: files whose vectors were all reused)."""
        if (not self.unwritten or len(self.unwritten) >= WRITE_BATCH
                or time.monotonic() - self.oldest >= WRITE_EVERY):
            self._flush()

    def _flush(self) -> None:
        """Write what has been embedded, then commit, in plan order, every file whose chunks all have vectors."""
        self.syncer._write(self.unwritten)
        self.unwritten = []
        done: list[_Job] = []
        while self.waiting and all(c.id in self.waiting[0].vectors for c in self.waiting[0].chunks):
            done.append(self.waiting.popleft())
        self.syncer._commit(done)


def pdf_workers(settings: Settings) -> PdfWorkers:
    return PdfWorkers(settings.file_memory_mb, settings.file_timeout, size=LOADERS)


def _page_text(doc: LoadedDocument, page: int | None) -> str:
    for p in doc.pages:
        if p.number == page:
            return p.text
    raise KeyError(page)


def _record(job: _Job, chunk: Chunk) -> Record:
    meta: dict[str, Any] = {
        "source": chunk.source,
        "position": chunk.position,
        "part": chunk.part,
        "start": chunk.start,
        "end": chunk.end,
        "content_hash": chunk.content_hash,
        "tokens": chunk.tokens,
        "file_sha256": job.state.sha256,
    }
    if chunk.page is not None:
        meta["page"] = chunk.page
    return Record(chunk.id, chunk.text, meta)


def check_root(root: Path) -> None:
    if not root.exists():
        raise BadRequest(f"folder {root} does not exist; give the folder of documents to ingest")
    if not root.is_dir():
        raise BadRequest(f"{root} is a file, not a folder; give the folder that contains it")
