"""The ingest job: take the store's lock, plan against the manifest, sync, and report."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ingest.journal import Journal
from ingest.manifest import Manifest
from ingest.reconcile import reconcile
from ingest.sync import Plan, Summary, Syncer, check_root, pdf_workers, plan_sync
from rag.config import Settings
from rag.errors import BadRequest
from rag.index.chroma import ChromaStore, check_embedding_model
from rag.index.lock import store_lock
from rag.index.token_store import KeywordWriter
from rag.ollama import Embedder

log = logging.getLogger(__name__)


@dataclass
class IngestResult:
    plan: Plan
    summary: Summary | None  # None on a dry run


def ingest_folder(
    root: Path,
    settings: Settings,
    *,
    dry_run: bool = False,
    rebuild: bool = False,
    reindex_keywords: bool = False,
    follow_symlinks: bool = False,
    progress_factory: Callable[[int], Callable[[int], None]] = lambda total: lambda n: None,
) -> IngestResult:
    """Sync `root` into the store and the keyword index. Only one writer at a time; a second one fails at once.

    `reindex_keywords` tokenises the stored chunks again (a damaged keyword index); `rebuild` drops both.
    `follow_symlinks` includes what links inside `root` point to; a link out of it is never followed.
    What an interrupted run left is reused where it fits and swept at the end (see ingest.reconcile).
    """
    check_root(root)
    with store_lock(settings, "rag ingest"):
        store = ChromaStore.open(settings, background=True)  # files load and embed while Chroma opens
        try:
            return sync_folder(
                root, settings, store, dry_run=dry_run, rebuild=rebuild, reindex_keywords=reindex_keywords,
                follow_symlinks=follow_symlinks, progress_factory=progress_factory,
            )
        finally:
            store.settle()


def sync_folder(
    root: Path,
    settings: Settings,
    store: ChromaStore,
    *,
    dry_run: bool = False,
    rebuild: bool = False,
    reindex_keywords: bool = False,
    follow_symlinks: bool = False,
    progress_factory: Callable[[int], Callable[[int], None]] = lambda total: lambda n: None,
    on_plan: Callable[[Plan], None] = lambda plan: None,
) -> IngestResult:
    """`ingest_folder`'s work, for a caller that holds the store already (rag serve's POST /sync).

    `on_plan` is told the plan before any file is done; `progress_factory(len(plan.work))` then advances
    once per file, in the plan's order."""
    check_root(root)
    if rebuild and not dry_run:
        log.info("rebuilding: dropping collection %s and its manifest", settings.collection)
        Journal(settings.journal_path).mark_everything()  # a kill from here on: the next run sweeps all
        Manifest.remove(settings.manifest_path)
        store.drop()
        reindex_keywords = True
    manifest = Manifest.load(settings.manifest_path)
    check_embedding_model(manifest.embed_model, None, settings.embed_model)
    plan = plan_sync(root, settings, manifest, follow_symlinks)
    if not (plan.work or plan.unchanged):
        if not dry_run:
            reconcile(settings, store)
        raise BadRequest(
            f"{root} has no supported files (.pdf .md .txt .html .htm); nothing to ingest"
            + (" and nothing deleted" if manifest.files else "")
            + "".join(f"; skipped {reason}" for _, reason in plan.unreadable[:3])
        )
    if dry_run:
        return IngestResult(plan, None)
    on_plan(plan)
    with pdf_workers(settings) as pdf:
        if any(st.path.suffix.lower() == ".pdf" for st in plan.work):
            pdf.warm()
        embedder = Embedder(settings)
        dim = None
        if plan.work:
            # The dimension is probed once, on the first ingest; later runs trust the manifest, so an
            # unchanged folder or a rename costs no embedding call at all.
            dim = manifest.embed_dim or embedder.dimension()  # the Syncer checks the collection at its first write
        keywords = open_keywords(settings, store, manifest, fresh=reindex_keywords)
        try:
            syncer = Syncer(settings, store, embedder, root, manifest, keywords=keywords, dim=dim,
                            progress=progress_factory(len(plan.work)), pdf=pdf)
            return IngestResult(plan, syncer.run(plan))
        finally:
            keywords.close()


def open_keywords(settings: Settings, store: ChromaStore, manifest: Manifest, *, fresh: bool) -> KeywordWriter:
    """The keyword writer, with tokens for every chunk the manifest lists (read from Chroma when missing).

    That covers an index made before keyword search existed, and `--reindex-keywords`.
    """
    writer = KeywordWriter(settings, fresh=fresh)
    ids = [i for entry in manifest.files.values() for i in entry.chunk_ids]
    if ids and writer.store.count() != len(ids):
        log.info("keyword index: tokenising %d stored chunks", len(ids) - writer.store.count())
        writer.backfill(store, ids)
    return writer

