"""Keyword tokens are kept as term ids (rag.index.token_store); the index built from them is the one bm25s builds
from the token text, a store that kept text is converted when opened, and a damaged one says what to run."""

from __future__ import annotations

import hashlib
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import bm25s
import numpy as np
import pytest

from rag.index.bm25 import KeywordIndexUnavailable, build_index, load_index
from rag.index.token_store import TOKENS_FILE, KeywordWriter
from rag.index.tokens import TOKENIZER_VERSION, Tokenizer
from tests.support.helpers import make_settings

TEXTS = [
    "Set OLLAMA_KEEP_ALIVE to keep llama3.1:8b loaded; the pump PN-4471-B cools the rack.",
    "冷却泵每月检查一次，过滤器每季度更换。The pump is checked monthly.",
    "The filter is replaced every quarter, and the pump is checked monthly.",
    "向量检索和关键词检索的结果会融合。Hybrid retrieval fuses both sides.",
    "A unique word: zymurgy.",
    "",
]


@dataclass(frozen=True)
class Chunk:
    id: str
    content_hash: str
    text: str


def chunks(texts: list[str], prefix: str = "c") -> list[Chunk]:
    return [Chunk(f"{prefix}{i:03d}", hashlib.sha256(t.encode()).hexdigest(), t) for i, t in enumerate(texts)]


def token_rows(items: list[Chunk]) -> list[tuple[str, str]]:
    tokenizer = Tokenizer()
    return sorted((c.id, " ".join(tokenizer.tokens(c.text))) for c in items)


def assert_same_index(ours: bm25s.BM25, ref: bm25s.BM25) -> None:
    """Same terms, and every term's column (documents and scores) the same, whatever id each term has."""
    assert set(ours.vocab_dict) == set(ref.vocab_dict)
    assert ours.scores["num_docs"] == ref.scores["num_docs"]
    for term, column in ref.vocab_dict.items():
        mine = ours.vocab_dict[term]
        lo, hi = ref.scores["indptr"][column : column + 2]
        my_lo, my_hi = ours.scores["indptr"][mine : mine + 2]
        assert np.array_equal(ours.scores["indices"][my_lo:my_hi], ref.scores["indices"][lo:hi]), term
        assert np.array_equal(ours.scores["data"][my_lo:my_hi], ref.scores["data"][lo:hi]), term


def test_the_index_from_term_ids_is_the_index_from_token_text(tmp_path: Path):
    settings = make_settings(tmp_path, "http://127.0.0.1:9")
    items = chunks(TEXTS)
    writer = KeywordWriter(settings)
    writer.put(items, [])
    assert writer.refresh()
    assert_same_index(load_index(settings.keyword_path).bm25, build_index(token_rows(items))[0])
    # Forget the chunk that alone holds "zymurgy": the rebuilt index has no column for it.
    writer.delete([items[4].id])
    assert writer.refresh()
    loaded = load_index(settings.keyword_path)
    assert "zymurgy" not in loaded.bm25.vocab_dict
    assert_same_index(loaded.bm25, build_index(token_rows(items[:4] + items[5:]))[0])
    writer.close()
    # A new writer reads the term table back: a known term keeps its id, a new one gets the next.
    again = KeywordWriter(settings)
    terms = dict(again.store.term_ids())
    again.put(chunks(["zymurgy pump 全新的词"], prefix="d"), [])
    assert {t: i for t, i in again.store.term_ids().items() if t in terms} == terms
    assert sorted(again.store.term_ids().values()) == list(range(len(again.store.term_ids())))
    assert again.refresh()
    assert_same_index(load_index(settings.keyword_path).bm25,
                      build_index(token_rows(items[:4] + items[5:] + chunks(["zymurgy pump 全新的词"], "d")))[0])
    again.close()


def test_a_store_that_kept_token_text_is_converted_and_reuses_tokens(tmp_path: Path):
    settings = make_settings(tmp_path, "http://127.0.0.1:9")
    items = chunks(TEXTS)
    rows = token_rows(items)
    path = settings.keyword_path / TOKENS_FILE
    path.parent.mkdir(parents=True)
    db = sqlite3.connect(path)  # the layout before term ids
    db.executescript("""
        CREATE TABLE chunks (id TEXT PRIMARY KEY, content_hash TEXT NOT NULL, tokens TEXT NOT NULL);
        CREATE INDEX chunks_by_hash ON chunks (content_hash);
        CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
    """)
    hashes = {c.id: c.content_hash for c in items}
    db.executemany("INSERT INTO chunks VALUES (?, ?, ?)", [(i, hashes[i], t) for i, t in rows])
    db.executemany("INSERT INTO meta VALUES (?, ?)", [("tokenizer", TOKENIZER_VERSION), ("generation", 7)])
    db.commit()
    db.close()

    writer = KeywordWriter(settings)
    assert writer.store.count() == len(items)
    assert writer.store.generation == 7
    kinds = {k for (k,) in sqlite3.connect(path).execute("SELECT DISTINCT typeof(tokens) FROM chunks")}
    assert kinds == {"blob"}
    assert writer.refresh()
    assert_same_index(load_index(settings.keyword_path).bm25, build_index(rows)[0])
    # A moved chunk takes the converted tokens of the one it replaces (no tokenising: the text is not read).
    moved = Chunk("moved", items[0].content_hash, "not the text the tokens came from")
    writer.put([moved], [items[0].id])
    writer.delete([items[0].id])
    assert writer.refresh()
    renamed = [("moved", rows[0][1]), *rows[1:]]
    assert_same_index(load_index(settings.keyword_path).bm25, build_index(sorted(renamed))[0])
    writer.close()


def test_damaged_tokens_say_what_to_run(tmp_path: Path):
    settings = make_settings(tmp_path, "http://127.0.0.1:9")
    writer = KeywordWriter(settings)
    writer.put(chunks(TEXTS[:2]), [])
    writer.close()
    db = sqlite3.connect(settings.keyword_path / TOKENS_FILE)
    db.execute("UPDATE chunks SET tokens = ? WHERE id = 'c000'", (np.asarray([10**6], dtype="<i4").tobytes(),))
    db.commit()
    db.close()
    writer = KeywordWriter(settings)
    with pytest.raises(KeywordIndexUnavailable, match="--reindex-keywords"):
        writer.refresh()
    writer.close()
