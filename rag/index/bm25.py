"""The keyword index file: a bm25s BM25 index over chunk tokens, built, saved under storage/, loaded, searched.

Where the tokens come from (kept per chunk by ingest) is rag.index.token_store; this module never tokenises
documents, only questions.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import shutil
import tempfile
import threading
from array import array
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rag.config import Settings
from rag.errors import RagError
from rag.index.tokens import TOKENIZER_VERSION, Tokenizer

log = logging.getLogger(__name__)


def _bm25s() -> Any:
    import bm25s

    # bm25s sets its own logger to DEBUG when imported; bring it back under the application's level.
    logging.getLogger("bm25s").setLevel(logging.WARNING)
    return bm25s

REINDEX_HINT = "rag ingest DIR --reindex-keywords"
CURRENT = "CURRENT.json"  # names the saved index in use; replaced atomically, so readers never see half of one
IDS = "ids.json"


class KeywordIndexUnavailable(RagError):
    """The keyword index is missing, unreadable, or made by another tokeniser: hybrid falls back to vectors."""

    code, status = "keyword_index_unavailable", 503

    def __init__(self, state: str, message: str) -> None:
        super().__init__(message)
        self.state = state  # "missing" | "corrupt" | "outdated"


@dataclass(frozen=True)
class KeywordHit:
    chunk_id: str
    score: float  # BM25, > 0


@dataclass(frozen=True)
class Loaded:
    """One saved index in memory: bm25s' matrix and the chunk id of each of its rows."""

    bm25: Any  # bm25s.BM25, or None when nothing is indexed
    ids: list[str]
    generation: int

    def rows(self) -> dict[str, int]:
        """Chunk id to row, made on first use (only the abstention check needs it)."""
        cached: dict[str, int] | None = self.__dict__.get("_rows")
        if cached is None:
            cached = {cid: i for i, cid in enumerate(self.ids)}
            object.__setattr__(self, "_rows", cached)
        return cached


# -- building and saving ----------------------------------------------------------------------------


def build_index(rows: Iterable[tuple[str, str]]) -> tuple[Any, list[str]]:
    """A BM25 index from (chunk id, space-joined tokens) rows, scored by bm25s; no tokenising here."""
    vocab: dict[str, int] = {}
    ids: list[str] = []
    tokens = array("i")
    lengths = array("q")
    for chunk_id, text in rows:
        ids.append(chunk_id)
        doc = [vocab.setdefault(t, len(vocab)) for t in text.split()]
        tokens.extend(doc)
        lengths.append(len(doc))
    if not vocab:
        return None, ids
    return _index(np.frombuffer(tokens, dtype=np.int32), np.frombuffer(lengths, dtype=np.int64), vocab), ids


def build_index_from_term_ids(rows: Iterable[tuple[str, bytes]], terms: dict[str, int]) -> tuple[Any, list[str]]:
    """A BM25 index from (chunk id, little-endian int32 term ids) rows, as rag.index.token_store keeps them,
    and its term -> id table. The index has a column only for the terms some chunk holds.

    Raises ValueError when a row names an id the table lacks (a damaged store).
    """
    ids: list[str] = []
    blobs: list[bytes] = []
    for chunk_id, blob in rows:
        ids.append(chunk_id)
        blobs.append(blob)
    lengths = np.fromiter((len(b) // 4 for b in blobs), dtype=np.int64, count=len(blobs))
    tokens = np.frombuffer(b"".join(blobs), dtype="<i4")
    del blobs
    if not len(tokens):
        return None, ids
    low, high = int(tokens.min()), int(tokens.max())
    if low < 0 or high >= len(terms):
        raise ValueError(f"a chunk names term id {low if low < 0 else high}, the table has {len(terms)}")
    held = np.zeros(len(terms), dtype=bool)
    held[tokens] = True
    column = (np.cumsum(held) - 1).astype(np.int32)  # term id -> its column in this index
    names = [""] * len(terms)
    for term, term_id in terms.items():
        names[term_id] = term
    vocab = {names[term_id]: k for k, term_id in enumerate(np.flatnonzero(held).tolist())}
    return _index(column[tokens], lengths, vocab), ids


def _index(tokens: np.ndarray, lengths: np.ndarray, vocab: dict[str, int]) -> Any:
    """bm25s' index of documents given as one int32 array of token ids (columns) and each one's length.

    The scores are computed with numpy (`_scores`): bm25s' own build loops over every document in Python
    (4 s of a 100k-chunk rebuild here, against ~0.6 s).
    """
    bm25 = _array_bm25()()
    bm25.index(_Corpus((tokens, lengths), vocab), create_empty_token=False, show_progress=False)
    return bm25


@dataclass(frozen=True)
class _Corpus:
    """What bm25s' `index` takes as an object with `ids` and `vocab`; `ids` here is (token ids, lengths)."""

    ids: tuple[np.ndarray, np.ndarray]
    vocab: dict[str, int]


@functools.cache
def _array_bm25() -> type:
    """bm25s.BM25 with `build_index_from_ids` (its hook for building another way) taking flat arrays."""

    class ArrayBM25(_bm25s().BM25):  # type: ignore[misc]
        def build_index_from_ids(self, unique_token_ids: list[int], corpus_token_ids: Any,
                                 show_progress: bool = True, leave_progress: bool = False) -> dict[str, Any]:
            tokens, lengths = corpus_token_ids
            if (self.method, self.idf_method) != ("lucene", "lucene") or self.dtype != "float32":
                raise ValueError(f"only bm25s' default scoring is built here, not {self.method}/{self.dtype}")
            self.nonoccurrence_array = None  # as bm25s sets it for Lucene scoring
            return _scores(tokens, lengths, len(unique_token_ids), self.k1, self.b)

    return ArrayBM25


def _scores(tokens: np.ndarray, lengths: np.ndarray, n_vocab: int, k1: float, b: float) -> dict[str, Any]:
    """bm25s' score matrix (Lucene BM25, CSC: a column per token, rows by document) for documents given as
    one array of token ids and each document's length: the same numbers, computed in the same order and
    precision (float64, rounded to float32 at the end; idf by math.log, rounded to float32, as bm25s does).
    """
    n_docs = len(lengths)
    # Sorting (token, document) pairs gives the column-major order and groups repeats: their count is tf.
    # In place where numpy allows: at 100k chunks each of these arrays is about 60 MB.
    pairs = tokens.astype(np.int64)
    pairs <<= 32
    pairs |= np.repeat(np.arange(n_docs, dtype=np.int32), lengths)
    pairs.sort()
    first = np.ones(len(pairs), dtype=bool)
    np.not_equal(pairs[1:], pairs[:-1], out=first[1:])
    starts = np.flatnonzero(first)
    del first
    tf = np.diff(starts, append=len(pairs)).astype(np.float32)
    pairs = pairs[starts]
    del starts
    columns = (pairs >> 32).astype(np.int32)
    rows = (pairs & 0xFFFFFFFF).astype(np.int32)
    del pairs
    df = np.bincount(columns, minlength=n_vocab)
    values, where = np.unique(df, return_inverse=True)
    idf = np.array([math.log(1 + (n_docs - d + 0.5) / (d + 0.5)) for d in values], dtype=np.float32)[where]
    norm = k1 * ((1 - b) + b * lengths / lengths.mean())  # per document, as bm25s computes it
    tfc = tf / (norm[rows] + tf)
    indptr = np.zeros(n_vocab + 1, dtype=np.int64)
    np.cumsum(df, out=indptr[1:])
    return {"data": (idf[columns] * tfc).astype(np.float32), "indices": rows, "indptr": indptr, "num_docs": n_docs}


def save_index(directory: Path, bm25: Any, ids: list[str], generation: int) -> None:
    """Write a new index beside the old one, point CURRENT at it, then remove the old one."""
    directory.mkdir(parents=True, exist_ok=True)
    target = Path(tempfile.mkdtemp(dir=directory, prefix=f"index-{generation}-"))
    if bm25 is not None:
        bm25.save(str(target), show_progress=False)
    (target / IDS).write_text(json.dumps(ids), encoding="utf-8")
    pointer = {"dir": target.name, "generation": generation, "chunks": len(ids), "tokenizer": TOKENIZER_VERSION}
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".current-", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(pointer, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, directory / CURRENT)
    for old in directory.glob("index-*"):
        if old.name != target.name:
            shutil.rmtree(old, ignore_errors=True)


# -- loading ----------------------------------------------------------------------------------------


def read_pointer(directory: Path) -> dict[str, Any]:
    path = directory / CURRENT
    if not path.exists():
        raise KeywordIndexUnavailable("missing", _message(directory, "is missing", "build"))
    try:
        pointer: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        pointer.update(generation=int(pointer["generation"]), chunks=int(pointer["chunks"]), dir=str(pointer["dir"]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise KeywordIndexUnavailable("corrupt", _message(directory, f"is unreadable ({exc})", "rebuild")) from exc
    if pointer.get("tokenizer") != TOKENIZER_VERSION:
        raise KeywordIndexUnavailable("outdated", _message(
            directory, f"was made by keyword tokeniser v{pointer.get('tokenizer')}, this is v{TOKENIZER_VERSION}",
            "rebuild"))
    return pointer


def load_index(directory: Path) -> Loaded:
    """The saved index named by CURRENT. Raises KeywordIndexUnavailable saying what to run."""
    bm25s = _bm25s()

    pointer = read_pointer(directory)
    where = directory / pointer["dir"]
    try:
        ids = json.loads((where / IDS).read_text(encoding="utf-8"))
        bm25 = bm25s.BM25.load(str(where), show_progress=False) if (where / "params.index.json").exists() else None
        rows = int(bm25.scores["num_docs"]) if bm25 is not None else len(ids)
    except Exception as exc:  # bm25s and numpy raise many types for a damaged file; all mean the same here
        raise KeywordIndexUnavailable("corrupt", _message(directory, f"is unreadable ({exc})", "rebuild")) from exc
    if not (len(ids) == rows == pointer["chunks"]):
        raise KeywordIndexUnavailable("corrupt", _message(
            directory, f"is inconsistent ({len(ids)} ids, {rows} rows, {pointer['chunks']} expected)", "rebuild"))
    return Loaded(bm25, ids, int(pointer["generation"]))


def _message(directory: Path, problem: str, verb: str) -> str:
    return f"the keyword index at {directory} {problem}; answering in vector mode; {verb} it with: {REINDEX_HINT}"


class KeywordIndex:
    """The service's keyword side: loaded at start-up, reloaded only when an ingest saved a newer one."""

    def __init__(self, directory: Path, tokenizer: Tokenizer | None = None) -> None:
        self.directory = directory
        self.tokenizer = tokenizer or Tokenizer()
        self.state, self.message = "missing", ""
        self._loaded: Loaded | None = None
        self._stamp: tuple[int, int] | None = None
        self._lock = threading.Lock()

    @classmethod
    def open(cls, settings: Settings) -> KeywordIndex:
        index = cls(settings.keyword_path)
        index.reload()
        return index

    def warm_up(self) -> None:
        """Load the question tokeniser's dictionary now (about a second), not on the first Chinese question."""
        if self.available:
            self.tokenizer.segmenter.load()

    @property
    def available(self) -> bool:
        self._reload_if_saved_again()
        return self._loaded is not None

    @property
    def chunks(self) -> int:
        return len(self._loaded.ids) if self._loaded else 0

    def reload(self) -> None:
        """Load what CURRENT names; when that fails, keep a good index already loaded, else report why."""
        with self._lock:
            self._stamp = self._pointer_stamp()
            try:
                self._loaded = load_index(self.directory)
                self.state, self.message = "ok", ""
            except KeywordIndexUnavailable as exc:
                if self._loaded is None:
                    self.state, self.message = exc.state, exc.message
                log.warning("%s", exc.message)

    def _pointer_stamp(self) -> tuple[int, int] | None:
        try:
            st = (self.directory / CURRENT).stat()
        except OSError:
            return None
        return st.st_mtime_ns, st.st_ino

    def _reload_if_saved_again(self) -> None:
        # One stat() per query: an ingest beside a running service (Chroma server mode) is picked up.
        if self._pointer_stamp() != self._stamp:
            self.reload()

    def search(self, query: str, k: int) -> list[KeywordHit]:
        """The k best chunks by BM25 for `query`; nothing when no query token is in the index."""
        self._reload_if_saved_again()
        loaded = self._loaded
        if loaded is None or loaded.bm25 is None:
            return []
        token_ids = loaded.bm25.get_tokens_ids(self.tokenizer.query(query))
        if not token_ids:
            return []
        scores = loaded.bm25.get_scores_from_ids(token_ids)
        return _top(scores, loaded.ids, k)

    def matched(self, query: str, chunk_ids: Iterable[str]) -> dict[str, float]:
        """For each chunk, the share of the question's keyword weight that the chunk contains (0 to 1).

        A term weighs its inverse document frequency; a term no chunk contains weighs the most, so a
        question about something the documents never name scores low even when its common words match.
        Unlike a BM25 score this does not grow with the corpus or the question's length: it reads the same
        in any language and on any corpus, which is what deciding "not in the documents" needs.
        """
        self._reload_if_saved_again()
        loaded, terms = self._loaded, set(self.tokenizer.query(query))
        wanted = list(chunk_ids)
        if loaded is None or loaded.bm25 is None or not terms:
            return dict.fromkeys(wanted, 0.0)
        n, indptr, indices = len(loaded.ids), loaded.bm25.scores["indptr"], loaded.bm25.scores["indices"]
        rows = loaded.rows()
        found = dict.fromkeys(wanted, 0.0)
        total = 0.0
        for term in terms:
            tid = loaded.bm25.vocab_dict.get(term)
            docs = indices[indptr[tid]:indptr[tid + 1]] if tid is not None else indices[:0]
            weight = float(np.log(1 + (n - len(docs) + 0.5) / (len(docs) + 0.5)))
            total += weight
            holding = set(docs.tolist())
            for cid in wanted:
                if rows.get(cid) in holding:
                    found[cid] += weight
        return {cid: w / total for cid, w in found.items()} if total > 0 else found

    def health(self) -> dict[str, Any]:
        self._reload_if_saved_again()
        out: dict[str, Any] = {"status": self.state, "chunks": self.chunks, "path": str(self.directory)}
        if self.message:
            out.update(message=self.message, hint=REINDEX_HINT)
        return out


def _top(scores: np.ndarray, ids: list[str], k: int) -> list[KeywordHit]:
    """Best first; ties by index position, so the same index always gives the same order."""
    n = min(k, len(scores))
    if n <= 0:
        return []
    best = np.argpartition(-scores, n - 1)[:n]
    best = best[np.lexsort((best, -scores[best]))]
    return [KeywordHit(ids[i], float(scores[i])) for i in best if scores[i] > 0]
