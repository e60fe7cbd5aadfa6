"""The keyword index's tokens, kept by ingest: per-chunk tokens in SQLite, and the BM25 file rebuilt from them.

The BM25 file itself (its format, building, saving, loading) is rag.index.bm25.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from rag.config import Settings
from rag.index.bm25 import REINDEX_HINT, KeywordIndexUnavailable, build_index_from_term_ids, load_index, save_index
from rag.index.chroma import ChromaStore
from rag.index.sql import select_by_id
from rag.index.tokens import TOKENIZER_VERSION, Tokenizer

log = logging.getLogger(__name__)

TOKENS_FILE = "tokens.sqlite3"
# A chunk's tokens are little-endian int32 ids into `terms` (a term keeps its id for the life of the store).
# Stores made before (layout 1) held them as space-joined text; they are converted when first opened.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS chunks (id TEXT PRIMARY KEY, content_hash TEXT NOT NULL, tokens BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS chunks_by_hash ON chunks (content_hash);
CREATE TABLE IF NOT EXISTS terms (term TEXT PRIMARY KEY, id INTEGER NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""
LAYOUT = 2


class ChunkText(Protocol):
    """What the token store needs of a chunk (ingest's Chunk has it): the index sits below ingest."""

    @property
    def id(self) -> str: ...

    @property
    def content_hash(self) -> str: ...

    @property
    def text(self) -> str: ...


class TokenStore:
    """Tokens of every indexed chunk, keyed by chunk id, with a generation bumped on every change.

    BM25 statistics change with every document, and bm25s cannot add or remove one, so the index is
    rebuilt after an ingest; these stored tokens make that rebuild cost no tokenising at all, and, kept as
    term ids, no mapping of terms to ids either (1.5 s of a 100k-chunk rebuild when they were text).
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path)
        self._terms: dict[str, int] | None = None  # term -> id, read on first use
        self._new_terms: list[tuple[str, int]] = []  # given ids, written with the next change
        try:
            self._db.executescript(_SCHEMA)
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('tokenizer', ?)", (TOKENIZER_VERSION,))
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('generation', 0)")
            self._db.commit()
            self._upgrade()
        except sqlite3.DatabaseError:
            self._db.close()
            raise

    def _upgrade(self) -> None:
        """Tokens stored as text (a store made before term ids): encode each chunk's once, in one transaction."""
        if self._db.execute("SELECT 1 FROM meta WHERE key = 'layout'").fetchone():
            return
        old = self._db.execute("SELECT id, tokens FROM chunks WHERE typeof(tokens) = 'text'").fetchall()
        if old:
            log.info("keyword tokens: storing the tokens of %d chunks as term ids (once)", len(old))
        rows = [(self.encode(text.split()), chunk_id) for chunk_id, text in old]
        with self._transaction():
            self._db.executemany("UPDATE chunks SET tokens = ? WHERE id = ?", rows)
            self._db.execute("INSERT INTO meta VALUES ('layout', ?)", (LAYOUT,))

    def _meta(self, key: str) -> int:
        return int(self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()[0])

    @property
    def generation(self) -> int:
        return self._meta("generation")

    @property
    def tokenizer_version(self) -> int:
        return self._meta("tokenizer")

    def count(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM chunks").fetchone()[0])

    def _select(self, columns: str, ids: Sequence[str]) -> Iterator[tuple[Any, ...]]:
        return select_by_id(self._db, "chunks", columns, ids)

    def present(self, ids: Sequence[str]) -> set[str]:
        return {row[0] for row in self._select("id", ids)}

    def tokens_by_hash(self, ids: Sequence[str]) -> dict[str, bytes]:
        return dict(self._select("content_hash, tokens", ids))

    def term_ids(self) -> dict[str, int]:
        if self._terms is None:
            self._terms = dict(self._db.execute("SELECT term, id FROM terms"))
        return self._terms

    def encode(self, tokens: Iterable[str]) -> bytes:
        """Tokens as stored: their term ids; a new term gets the next id, written with the next change."""
        terms = self.term_ids()
        ids = []
        for token in tokens:
            term = terms.get(token)
            if term is None:
                term = terms[token] = len(terms)
                self._new_terms.append((token, term))
            ids.append(term)
        return np.asarray(ids, dtype="<i4").tobytes()

    def change(self, put: Sequence[tuple[str, str, bytes]], delete: Sequence[str]) -> None:
        """Add (id, content_hash, encoded tokens) rows and delete ids in one transaction, one generation."""
        if not put and not delete:
            return
        with self._transaction():
            self._db.executemany("INSERT OR REPLACE INTO chunks VALUES (?, ?, ?)", put)
            self._db.executemany("DELETE FROM chunks WHERE id = ?", [(i,) for i in delete])
            self._db.execute("UPDATE meta SET value = value + 1 WHERE key = 'generation'")

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """Commit the new terms with what uses them; if that fails, forget them (they are read again)."""
        try:
            with self._db:
                self._db.executemany("INSERT INTO terms VALUES (?, ?)", self._new_terms)
                yield
        except BaseException:
            self._terms = None
            raise
        finally:
            self._new_terms = []

    def ids(self) -> set[str]:
        return {row[0] for row in self._db.execute("SELECT id FROM chunks")}

    def rows(self) -> Iterator[tuple[str, bytes]]:
        """(id, encoded tokens) of every chunk, in id order: the same store always builds the same index."""
        yield from self._db.execute("SELECT id, tokens FROM chunks ORDER BY id")

    def close(self) -> None:
        self._db.close()


class KeywordWriter:
    """What sync calls as it commits files: tokenise only new chunk texts, and rebuild the index at the end."""

    def __init__(self, settings: Settings, tokenizer: Tokenizer | None = None, *, fresh: bool = False) -> None:
        """`fresh` drops the keyword index first, tokens and all (`--reindex-keywords`, `--rebuild`)."""
        self.directory = settings.keyword_path
        self.tokenizer = tokenizer or Tokenizer()
        if fresh:
            log.info("dropping the keyword index at %s", self.directory)
            self.drop()
        self.store = self._open()

    def _open(self) -> TokenStore:
        path = self.directory / TOKENS_FILE
        if not path.exists():
            self.drop()  # an index whose tokens are gone cannot be kept in step: start both afresh
            return TokenStore(path)
        try:
            store = TokenStore(path)
            if store.tokenizer_version == TOKENIZER_VERSION:
                return store
            store.close()
            log.warning("keyword tokens were made by another tokeniser version; tokenising again")
        except sqlite3.DatabaseError as exc:
            log.warning("the keyword token store %s is unreadable (%s); building it again", self.directory, exc)
        self.drop()
        return TokenStore(path)

    def drop(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)

    @staticmethod
    def has_tokens(settings: Settings) -> bool:
        return (settings.keyword_path / TOKENS_FILE).exists()

    @classmethod
    def existing(cls, settings: Settings) -> KeywordWriter | None:
        """The writer of a keyword index that has its tokens; None where there is none to keep in step."""
        return cls(settings) if cls.has_tokens(settings) else None

    def put(self, chunks: Sequence[ChunkText], donors: Sequence[str]) -> None:
        """Store the tokens of a file's chunks; the chunks they replace are deleted later, by `delete`.

        A chunk already stored (same id, so same text) is left alone; one with the text of a chunk it
        replaces (a rename, a moved paragraph) takes that chunk's tokens.
        """
        have = self.store.present([c.id for c in chunks])
        reuse = self.store.tokens_by_hash(list(donors))
        rows = []
        for c in chunks:
            if c.id not in have:
                tokens = reuse.get(c.content_hash)
                rows.append((c.id, c.content_hash, tokens if tokens is not None else self._tokens(c.text)))
        self.store.change(rows, [])

    def _tokens(self, text: str) -> bytes:
        return self.store.encode(self.tokenizer.tokens(text))

    def delete(self, ids: Sequence[str]) -> None:
        self.store.change([], ids)

    def backfill(self, store: ChromaStore, ids: Sequence[str]) -> None:
        """Tokenise chunks already in Chroma (an index made before keywords, or --reindex-keywords)."""
        ids = sorted(set(ids) - self.store.present(ids))
        step = 1000  # one transaction per thousand chunks: a long backfill keeps what it has done
        for start in range(0, len(ids), step):
            rows = [
                (r.id, str(r.metadata.get("content_hash", "")), self._tokens(r.text))
                for r in store.records(ids[start : start + step])
            ]
            self.store.change(rows, [])

    def refresh(self, force: bool = False) -> bool:
        """Rebuild and save the BM25 index when the tokens changed since it was saved (or it is unreadable)."""
        generation = self.store.generation
        try:  # loading is cheap (about 20 ms for 100k chunks): a damaged index is caught here and rebuilt
            if not force and load_index(self.directory).generation == generation:
                return False
        except KeywordIndexUnavailable:
            pass
        try:
            bm25, ids = build_index_from_term_ids(self.store.rows(), self.store.term_ids())
        except ValueError as exc:  # a damaged token store: only tokenising the chunks again mends it
            raise KeywordIndexUnavailable("corrupt", f"the keyword tokens at {self.directory} are damaged ({exc}); "
                                          f"rebuild them with: {REINDEX_HINT}") from exc
        save_index(self.directory, bm25, ids, generation)
        log.info("keyword index: %d chunks indexed", len(ids))
        return True

    def close(self) -> None:
        self.store.close()
