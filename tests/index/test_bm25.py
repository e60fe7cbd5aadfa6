"""The keyword index is built with numpy (rag.index.bm25._scores), not bm25s' per-document loops: the index it
makes must be bm25s' own, number for number, and search the same after a save and a load."""

from __future__ import annotations

import random
from array import array
from pathlib import Path

import bm25s
import numpy as np
import pytest

from rag.index.bm25 import KeywordIndex, build_index, load_index, save_index


def corpus(seed: int, docs: int, vocabulary: int) -> list[tuple[str, str]]:
    """Zipf-like tokens, repeats within a document, some empty documents, ids in order."""
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(vocabulary)] + ["中文", "ollama", "a"]
    weights = [1 / (rank + 1) for rank in range(len(words))]
    rows = []
    for i in range(docs):
        length = 0 if rng.random() < 0.05 else rng.randint(1, 120)
        rows.append((f"c{i:06d}", " ".join(rng.choices(words, weights, k=length))))
    return rows


def reference(rows: list[tuple[str, str]]) -> bm25s.BM25:
    """bm25s building the index itself, from the same token ids."""
    vocab: dict[str, int] = {}
    docs = [array("i", [vocab.setdefault(t, len(vocab)) for t in text.split()]) for _, text in rows]
    bm25 = bm25s.BM25()
    bm25.index((docs, vocab), create_empty_token=False, show_progress=False)
    return bm25


@pytest.mark.parametrize(("seed", "docs", "vocabulary"), [(1, 1, 5), (2, 40, 10), (3, 3000, 2000), (4, 500, 40000)])
def test_the_index_is_bm25s_own_number_for_number(seed, docs, vocabulary):
    rows = corpus(seed, docs, vocabulary)
    ours, ids = build_index(rows)
    ref = reference(rows)
    assert ids == [i for i, _ in rows]
    assert ours.vocab_dict == ref.vocab_dict
    assert ours.scores["num_docs"] == ref.scores["num_docs"] == docs
    for key in ("data", "indices", "indptr"):
        assert ours.scores[key].dtype == ref.scores[key].dtype, key
        assert np.array_equal(ours.scores[key], ref.scores[key]), key
    query = ref.get_tokens_ids(["w0", "w3", "中文", "w7"])
    assert np.array_equal(ours.get_scores_from_ids(query), ref.get_scores_from_ids(query))


def test_a_saved_index_searches_as_bm25s_would(tmp_path: Path):
    rows = corpus(5, 800, 300)
    bm25, ids = build_index(rows)
    save_index(tmp_path, bm25, ids, generation=3)
    loaded = load_index(tmp_path)
    assert (loaded.ids, loaded.generation) == (ids, 3)
    index = KeywordIndex(tmp_path)
    index.reload()
    ref = reference(rows)
    for question in ["w1 w2", "ollama", "w5 中文 w250"]:
        scores = ref.get_scores_from_ids(ref.get_tokens_ids(question.split()))
        best = sorted(range(len(ids)), key=lambda i: (-scores[i], i))[:10]
        want = [(ids[i], float(scores[i])) for i in best if scores[i] > 0]
        got = [(hit.chunk_id, hit.score) for hit in index.search(question, 10)]
        assert got == want, question


def test_nothing_to_index():
    assert build_index([]) == (None, [])
    assert build_index([("a", ""), ("b", "")]) == (None, ["a", "b"])
