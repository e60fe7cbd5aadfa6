"""Fusion: one ranking from the vector and the keyword rankings, by reciprocal rank or by weighted scores."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass
class Candidate:
    """A chunk found by either side, with what each side said about it (rank 1 is best)."""

    chunk_id: str
    vector_score: float | None = None
    vector_rank: int | None = None
    keyword_score: float | None = None
    keyword_rank: int | None = None
    fused: float = 0.0


def candidates(vector: Sequence[tuple[str, float]], keyword: Sequence[tuple[str, float]]) -> list[Candidate]:
    """Merge two best-first lists of (chunk id, score) into one candidate per chunk."""
    found: dict[str, Candidate] = {}
    for rank, (cid, score) in enumerate(vector, start=1):
        found[cid] = Candidate(cid, vector_score=score, vector_rank=rank)
    for rank, (cid, score) in enumerate(keyword, start=1):
        c = found.setdefault(cid, Candidate(cid))
        c.keyword_score, c.keyword_rank = score, rank
    return list(found.values())


def reciprocal_rank(found: list[Candidate], k: int = 60) -> None:
    """RRF (Cormack et al., 2009): sum of 1 / (k + rank) over the rankings that hold the chunk.

    Ranks only: neither side's score scale matters, which is why it needs no tuning per corpus.
    """
    for c in found:
        c.fused = sum(1.0 / (k + r) for r in (c.vector_rank, c.keyword_rank) if r is not None)


def weighted(found: list[Candidate], vector_weight: float = 0.5) -> None:
    """w * min-max-normalised cosine + (1 - w) * BM25 / best BM25; a side that missed the chunk adds 0."""
    vec = [c.vector_score for c in found if c.vector_score is not None]
    low, high = (min(vec), max(vec)) if vec else (0.0, 0.0)
    best_bm25 = max((c.keyword_score or 0.0 for c in found), default=0.0)
    for c in found:
        v = 0.0
        if c.vector_score is not None:
            v = (c.vector_score - low) / (high - low) if high > low else 1.0
        kw = (c.keyword_score or 0.0) / best_bm25 if best_bm25 > 0 else 0.0
        c.fused = vector_weight * v + (1.0 - vector_weight) * kw


def ranked(found: list[Candidate]) -> list[Candidate]:
    """Best fused score first; ties go to the better single rank, then the chunk id (stable across runs)."""
    big = 1 << 30
    return sorted(found, key=lambda c: (-c.fused, min(c.vector_rank or big, c.keyword_rank or big), c.chunk_id))


def fuse(
    vector: Sequence[tuple[str, float]],
    keyword: Sequence[tuple[str, float]],
    method: str = "weighted",
    *,
    rrf_k: int = 60,
    vector_weight: float = 0.5,
) -> list[Candidate]:
    found = candidates(vector, keyword)
    if method == "rrf":
        reciprocal_rank(found, rrf_k)
    else:
        weighted(found, vector_weight)
    return ranked(found)
