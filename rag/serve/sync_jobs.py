"""Syncing the documents folder while serving: POST /sync's background jobs and `rag serve --watch`.

The embedded store has one writer, and rag serve already holds it: a job runs ingest's own sync
(`ingest.run.sync_folder`) in a worker thread on the store this process opened. Questions keep being
answered meanwhile; when it ends they see the new chunks (the retriever reloads a keyword index an ingest
saved). One job at a time.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ingest.run import IngestResult, sync_folder
from ingest.sync import Plan, check_root
from rag.config import Settings
from rag.errors import BadRequest, NotFound, RagError, SyncRunning
from rag.index.chroma import ChromaStore
from rag.serve.observability import Metrics

log = logging.getLogger(__name__)

KEPT = 20  # finished jobs remembered for GET /sync/{id}


@dataclass
class FileProgress:
    source: str
    action: str  # add | update | rename | delete
    state: str = "pending"  # pending -> processed (read, chunked, embedding under way) -> done | failed
    error: str | None = None


@dataclass
class SyncJob:
    id: str
    folder: str
    trigger: str  # api | watch
    state: str = "running"  # running | done | failed
    started: float = field(default_factory=time.time)
    finished: float | None = None
    files: list[FileProgress] = field(default_factory=list)
    processed: int = 0
    summary: dict[str, Any] | None = None
    error: str | None = None

    def planned(self, plan: Plan) -> None:
        for f in plan.work:
            action = "rename" if f.source in plan.renamed else ("update" if f in plan.changed else "add")
            self.files.append(FileProgress(f.source, action))
        gone = set(plan.renamed.values())
        self.files += [FileProgress(s, "delete") for s in plan.deleted if s not in gone]

    def progress(self, total: int) -> Callable[[int], None]:
        def advance(n: int) -> None:  # one call per file of plan.work, in order
            for f in self.files[self.processed : self.processed + n]:
                f.state = "processed"
            self.processed += n
        return advance

    def finish(self, result: IngestResult) -> None:
        s = result.summary
        assert s is not None  # never a dry run here
        failed = dict(s.failures)
        for f in self.files:
            f.state, f.error = ("failed", failed[f.source]) if f.source in failed else ("done", None)
        self.summary = {
            "added": s.added, "updated": s.updated, "renamed": s.renamed, "unchanged": s.unchanged,
            "deleted": s.deleted, "failed": s.failed, "skipped": s.skipped, "chunks_written": s.chunks_written,
            "chunks_reused": s.chunks_reused, "embed_calls": s.embed_calls, "seconds": round(s.seconds, 2),
            "failures": [{"source": src, "reason": why} for src, why in s.failures],
        }
        self.state, self.finished = "done", time.time()

    def public(self) -> dict[str, Any]:
        return {**asdict(self), "total": len(self.files)}


class SyncJobs:
    """The jobs of one rag serve process: at most one running, the last few kept for reading."""

    def __init__(self, settings: Settings, store: ChromaStore, metrics: Metrics) -> None:
        self.settings, self.store, self.metrics = settings, store, metrics
        self.jobs: dict[str, SyncJob] = {}
        self.running: asyncio.Task[None] | None = None
        self.current: SyncJob | None = None

    def start(self, trigger: str = "api") -> SyncJob:
        """Start a sync of RAG_DOCS_DIR in the background; SyncRunning when one runs already."""
        if self.current is not None:
            raise SyncRunning(f"sync {self.current.id} is running (GET /sync/{self.current.id}); one at a time")
        folder = self.settings.docs_dir
        if folder is None:
            raise BadRequest("no documents folder to sync: set RAG_DOCS_DIR, or run rag serve --watch DIR")
        check_root(folder)
        job = self.current = SyncJob(uuid.uuid4().hex[:12], str(folder), trigger)
        self.jobs[job.id] = job
        for old in list(self.jobs)[:-KEPT]:
            del self.jobs[old]
        self.running = asyncio.create_task(self._run(job, folder))
        log.info("sync %s of %s started (%s)", job.id, folder, trigger)
        return job

    def get(self, job_id: str) -> SyncJob:
        if job_id not in self.jobs:
            raise NotFound(f"no sync job {job_id}; POST /sync starts one (the last {KEPT} are kept)")
        return self.jobs[job_id]

    async def _run(self, job: SyncJob, folder: Path) -> None:
        self.metrics.ingest_runs.labels(job.trigger).inc()
        try:
            result = await asyncio.to_thread(
                sync_folder, folder, self.settings, self.store, progress_factory=job.progress, on_plan=job.planned
            )
            job.finish(result)
            self.metrics.ingest_file_failures.inc(len(job.summary["failures"]) if job.summary else 0)
            log.info("sync %s done: %s", job.id, job.summary)
        except RagError as exc:
            self._failed(job, exc.message)
        except Exception:
            log.exception("sync %s stopped", job.id)
            self._failed(job, "internal error; the server log has the details")
        finally:
            self.current = None

    def _failed(self, job: SyncJob, message: str) -> None:
        log.warning("sync %s failed: %s", job.id, message)
        job.state, job.error, job.finished = "failed", message, time.time()
        self.metrics.ingest_failures.inc()

    async def wait(self) -> None:
        """Until the running job, if any, has ended."""
        if self.running is not None:
            await asyncio.shield(self.running)

    async def watch(self, stop: asyncio.Event) -> None:
        """`rag serve --watch`: a sync after each burst of changes, once RAG_WATCH_DEBOUNCE seconds are quiet."""
        from watchfiles import awatch

        folder = self.settings.docs_dir
        assert folder is not None
        quiet_ms = int(self.settings.watch_debounce * 1000)
        log.info("watching %s; a change syncs it after %.1fs of quiet", folder, self.settings.watch_debounce)
        async for changes in awatch(folder, step=quiet_ms, debounce=max(10 * quiet_ms, 1600), stop_event=stop):
            log.info("%d changes under %s", len(changes), folder)
            await self.wait()  # a change during a sync is synced after it
            try:
                self.start("watch")
            except RagError as exc:
                log.warning("sync after a change did not start: %s", exc.message)
            await self.wait()

    async def close(self) -> None:
        """At shutdown: let a running sync finish its files (its thread cannot be cancelled half-way)."""
        await self.wait()
