"""Keeping Chroma, the keyword index and the manifest in agreement: the sweep after a crash, and `rag check`.

The manifest says which chunks exist. After a kill, the journal names every chunk the indexes may hold
beyond that; `sweep` removes those (cheap: it reads only the journal). `inspect` lists all three stores
whole, for `rag check`, and `repair` makes them agree again whatever the cause.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

from ingest.journal import Journal
from ingest.manifest import Manifest
from rag.config import Settings
from rag.errors import StoreLocked
from rag.index.bm25 import KeywordIndexUnavailable, load_index
from rag.index.chroma import REBUILD_HINT, ChromaStore
from rag.index.lock import store_lock
from rag.index.token_store import KeywordWriter

log = logging.getLogger(__name__)

# -- after a crash ----------------------------------------------------------------------------------


def sweep(store: ChromaStore, keywords: KeywordWriter | None, journal: Journal, manifest: Manifest) -> int:
    """Remove journaled chunks that no manifest entry owns from both indexes, bring BM25 up to date, and
    clear the journal. Returns how many such chunks were still stored."""
    if not journal.pending:
        if keywords:
            keywords.refresh()
        return 0
    candidates = set(journal.ids)
    if journal.everything:  # a rebuild was interrupted: anything may be left, so look at everything
        candidates |= store.source_of_ids().keys() | store.texts.ids() | (keywords.store.ids() if keywords else set())
    orphans = sorted(candidates - manifest.owned())
    stored = store.present(orphans) | (keywords.store.present(orphans) if keywords else set())
    if stored:
        log.info("removing %d chunks no file owns (left by an interrupted ingest)", len(stored))
        if keywords:
            keywords.delete(sorted(stored))
        store.delete(sorted(stored))
    if keywords:
        keywords.refresh()
    journal.clear()
    return len(stored)


def reconcile(settings: Settings, store: ChromaStore | None = None) -> int:
    """Finish what an interrupted ingest left: its unowned chunks leave Chroma and the keyword index.

    The caller holds the store lock. Costs one stat() when nothing was interrupted. Returns the number
    of chunks removed. Files whose write did not finish are redone by the next ingest, which finds them
    changed against the manifest.
    """
    journal = Journal(settings.journal_path)
    if not journal.pending:
        return 0
    store = store or ChromaStore.open(settings)
    keywords = KeywordWriter.existing(settings)
    try:
        return sweep(store, keywords, journal, Manifest.load(settings.manifest_path))
    finally:
        if keywords:
            keywords.close()


def reconcile_at_startup(settings: Settings, store: ChromaStore | None = None) -> int:
    """For `rag serve` starting: with the embedded store the service already holds the lock; with a Chroma
    server it takes the lock for the sweep alone, and skips it when an ingest holds it (that ingest sweeps)."""
    if not settings.chroma_host:
        return reconcile(settings, store)
    try:
        with store_lock(settings, "rag serve (start-up check)"):
            return reconcile(settings, store)
    except StoreLocked:
        log.info("an ingest is running; it will remove what an interrupted one left")
        return 0


# -- rag check --------------------------------------------------------------------------------------


@dataclass
class Findings:
    """Where Chroma, the keyword index and the manifest disagree. Empty collections mean agreement."""

    files: int = 0
    chunks: int = 0  # owned by the manifest
    chroma_orphans: dict[str, str] = field(default_factory=dict)  # id -> source its metadata names
    chroma_missing: dict[str, str] = field(default_factory=dict)  # id -> manifest source that owns it
    duplicates: dict[str, list[str]] = field(default_factory=dict)  # id -> manifest sources listing it
    text_orphans: set[str] = field(default_factory=set)  # chunk texts no file owns
    text_missing: dict[str, str] = field(default_factory=dict)  # id -> source: a chunk with no text anywhere
    token_orphans: set[str] = field(default_factory=set)
    token_missing: set[str] = field(default_factory=set)
    keyword_index: str = ""  # what is wrong with the saved BM25 index, if anything
    model: str = ""  # the manifest and the collection name different embedding models
    outdated: list[str] = field(default_factory=list)  # files marked to be redone by the next ingest
    journal: int = 0  # chunk ids an interrupted ingest journaled

    @property
    def agree(self) -> bool:
        return not (
            self.chroma_orphans or self.chroma_missing or self.duplicates or self.token_orphans
            or self.token_missing or self.keyword_index or self.model or self.text_orphans or self.text_missing
        )

    def lines(self) -> list[str]:
        out = [f"manifest:  {self.files} files, {self.chunks} chunks"]
        if self.chroma_orphans:
            out.append(f"chroma:    {len(self.chroma_orphans)} chunks no file owns ({_by_source(self.chroma_orphans)})")
        if self.chroma_missing:
            out.append(f"chroma:    {len(self.chroma_missing)} chunks of the manifest are missing "
                       f"({_by_source(self.chroma_missing)})")
        if self.text_orphans:
            out.append(f"texts:     {len(self.text_orphans)} chunk texts no file owns")
        if self.text_missing:
            out.append(f"texts:     {len(self.text_missing)} chunks of the manifest have no text "
                       f"({_by_source(self.text_missing)})")
        if self.duplicates:
            out.append(f"manifest:  {len(self.duplicates)} chunks listed twice")
        if self.token_orphans:
            out.append(f"keywords:  {len(self.token_orphans)} chunks no file owns")
        if self.token_missing:
            out.append(f"keywords:  {len(self.token_missing)} chunks of the manifest are missing")
        if self.keyword_index:
            out.append(f"keywords:  {self.keyword_index}")
        if self.model:
            out.append(f"model:     {self.model}")
        if self.journal:
            out.append(f"journal:   {self.journal} chunk ids recorded by an interrupted ingest (the next ingest, "
                       "`rag serve` or `rag check --repair` removes those no file owns)")
        if self.outdated:
            out.append(f"outdated:  {len(self.outdated)} files to be redone by the next `rag ingest DIR` "
                       f"({', '.join(self.outdated[:5])}{', ...' if len(self.outdated) > 5 else ''})")
        return out


def _by_source(ids: dict[str, str]) -> str:
    counts = Counter(ids.values()).most_common()
    shown = ", ".join(f"{source}: {n}" for source, n in counts[:5])
    return shown + (f", and {len(counts) - 5} more files" if len(counts) > 5 else "")


def inspect(settings: Settings, store: ChromaStore) -> Findings:
    """Read all three stores whole and say where they disagree. The caller holds the store lock."""
    manifest = Manifest.load(settings.manifest_path)
    owners: dict[str, list[str]] = {}
    for entry in manifest.files.values():
        for cid in entry.chunk_ids:
            owners.setdefault(cid, []).append(entry.source)
    stored = store.source_of_ids()
    found = Findings(files=len(manifest.files), chunks=len(owners), journal=len(Journal(settings.journal_path).ids))
    found.chroma_orphans = {i: s for i, s in stored.items() if i not in owners}
    found.chroma_missing = {i: o[0] for i, o in owners.items() if i not in stored}
    found.duplicates = {i: o for i, o in owners.items() if len(o) > 1}
    texts = store.texts.ids()
    found.text_orphans = texts - owners.keys()
    held = {r.id for r in store.records([i for i in owners if i in stored and i not in texts]) if r.text}
    found.text_missing = {i: o[0] for i, o in owners.items() if i in stored and i not in texts and i not in held}
    found.outdated = sorted(e.source for e in manifest.files.values() if e.outdated)
    _inspect_keywords(settings, set(owners), found)
    built, _ = store.indexed_model() if store.exists() else (None, None)
    if built and manifest.embed_model and built != manifest.embed_model:
        found.model = (f"the manifest says '{manifest.embed_model}' but Chroma's collection was built with "
                       f"'{built}'; rebuild with: {REBUILD_HINT}")
    return found


def _inspect_keywords(settings: Settings, owned: set[str], found: Findings) -> None:
    if not KeywordWriter.has_tokens(settings):
        if owned:
            found.token_missing = set(owned)
            found.keyword_index = "missing"
        return
    writer = KeywordWriter(settings)
    try:
        tokens, generation = writer.store.ids(), writer.store.generation
    finally:
        writer.close()
    found.token_orphans = tokens - owned
    found.token_missing = owned - tokens
    try:
        loaded = load_index(settings.keyword_path)
    except KeywordIndexUnavailable as exc:
        found.keyword_index = f"the BM25 index is {exc.state}"
        return
    if loaded.generation != generation or set(loaded.ids) != tokens:
        found.keyword_index = (f"the BM25 index is behind its tokens ({len(loaded.ids)} chunks, generation "
                               f"{loaded.generation}; tokens: {len(tokens)}, generation {generation})")


def repair(settings: Settings, store: ChromaStore, found: Findings) -> list[str]:
    """Make the three agree: unowned chunks leave both indexes; chunks missing from Chroma leave the manifest
    (their files are marked to be redone); missing tokens are made from Chroma; BM25 is rebuilt."""
    done: list[str] = []
    journal = Journal(settings.journal_path)
    lost = set(found.chroma_missing) | set(found.text_missing)
    if lost or found.duplicates:
        done.append(_forget(settings, journal, lost))
    orphans = sorted(set(found.chroma_orphans) | found.token_orphans | lost)
    if found.chroma_orphans:
        store.delete(sorted(found.chroma_orphans))
        done.append(f"removed {len(found.chroma_orphans)} chunks no file owns from Chroma")
    if found.text_orphans or found.text_missing:
        store.delete(sorted(found.text_orphans | set(found.text_missing)))
        done.append(f"removed {len(found.text_orphans)} chunk texts no file owns")
    writer = KeywordWriter(settings)
    try:
        if found.token_orphans or lost:
            writer.delete(orphans)
            done.append(f"removed {len(found.token_orphans)} chunks no file owns from the keyword index")
        missing = sorted(found.token_missing - lost)
        if missing:
            writer.backfill(store, missing)
            done.append(f"tokenised {len(missing)} chunks the keyword index lacked")
        if writer.refresh(force=bool(found.keyword_index)):
            done.append("rebuilt the BM25 index")
    finally:
        writer.close()
    journal.clear()
    return done


def _forget(settings: Settings, journal: Journal, ids: set[str]) -> str:
    """Drop chunk ids from the manifest (Chroma lost them), and second listings of one id; mark the files
    they came from to be redone."""
    path = settings.manifest_path
    manifest = Manifest.load(path)
    journal.add("rag check", sorted(ids))
    touched: list[str] = []
    seen: set[str] = set()
    for entry in manifest.files.values():
        keep = [i for i in entry.chunk_ids if i not in ids and i not in seen]
        seen.update(keep)
        if keep != entry.chunk_ids:
            entry.chunk_ids, entry.outdated = keep, True
            touched.append(entry.source)
    manifest.save(path)
    return f"marked {len(touched)} files to be redone by the next `rag ingest DIR`: {', '.join(touched[:5])}"


@dataclass
class CheckResult:
    before: Findings
    repairs: list[str] = field(default_factory=list)
    after: Findings | None = None  # after a repair

    @property
    def agree(self) -> bool:
        return (self.after or self.before).agree


def check_store(settings: Settings, fix: bool = False) -> CheckResult:
    """`rag check`: compare the three under the store lock; with `fix`, repair and compare again."""
    with store_lock(settings, "rag check --repair" if fix else "rag check"):
        store = ChromaStore.open(settings)
        before = inspect(settings, store)
        if not fix or (before.agree and not before.journal):
            return CheckResult(before)
        repairs = repair(settings, store, before)
        return CheckResult(before, repairs, inspect(settings, store))
