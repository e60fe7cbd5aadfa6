"""Fusion: one ranking from the vector and the keyword rankings: adaptive (per query), weighted, or by rank."""

from __future__ import annotations

import statistics
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


def informativeness(scores: Sequence[float], depth: int) -> float:
    """How far a side's best score stands above its other candidates, in their standard deviations.

    A side whose top scores are flat (an embedding model that does not know the question's language) or
    that matched nothing says little about this question; one whose best hit stands out says much. Scale
    free, so it reads the same for cosines of any embedding model and for BM25 on any corpus. The keyword
    side returns only chunks that share a term: the chunks it did not return score 0, up to `depth`.
    """
    rest = [*scores[1:], *[0.0] * (depth - len(scores))]
    if not scores or len(rest) < 2:
        return 0.0
    spread = statistics.pstdev(rest)
    gap = scores[0] - statistics.fmean(rest)
    return gap / spread if spread > 0 else (_CLEAR if gap > 0 else 0.0)


_CLEAR = 10.0  # the best hit stands out and the others are all equal: as informative as it gets


def agreement(found: list[Candidate], first: int = 10) -> float:
    """The share of the vector side's first `first` chunks that the keyword side also found in its first.

    The keyword side is literal evidence: its chunks contain the question's terms. An embedding model that
    reads the question's language puts some of those chunks among its nearest (about 0.35 on SQuAD with
    all-MiniLM); one that does not finds other chunks (under 0.1 on DRCD, Chinese). 1 when the keyword side
    found nothing, as there is nothing to check the vectors against.
    """
    vec = {c.chunk_id for c in found if c.vector_rank is not None and c.vector_rank <= first}
    kw = {c.chunk_id for c in found if c.keyword_rank is not None and c.keyword_rank <= first}
    return len(vec & kw) / len(vec) if kw and vec else 1.0


def adaptive(found: list[Candidate], depth: int, sharpness: float = 2.0) -> None:
    """Weighted fusion with this question's vector share: each side's informativeness^s, the vector side's
    times its agreement with the keyword side, normalised to 1.

    With s = 0 and full agreement it is weighted fusion at 0.5; the larger s, the more the clearer side
    decides alone. The tune part of bench/retrieval_bench.py's public sets does not separate s = 0 to 4, so
    the default stays at 2, the value it had before the sweep.
    """
    vec = sorted((c.vector_score for c in found if c.vector_score is not None), reverse=True)
    kw = sorted((c.keyword_score for c in found if c.keyword_score is not None), reverse=True)
    v = informativeness(vec, depth) ** sharpness * agreement(found)
    k = informativeness(kw, depth) ** sharpness
    weighted(found, v / (v + k) if v + k > 0 else 0.5)


def ranked(found: list[Candidate]) -> list[Candidate]:
    """Best fused score first; ties go to the better single rank, then the chunk id (stable across runs)."""
    big = 1 << 30
    return sorted(found, key=lambda c: (-c.fused, min(c.vector_rank or big, c.keyword_rank or big), c.chunk_id))


def fuse(
    vector: Sequence[tuple[str, float]],
    keyword: Sequence[tuple[str, float]],
    method: str = "adaptive",
    *,
    rrf_k: int = 60,
    vector_weight: float = 0.5,
    depth: int = 20,
    sharpness: float = 2.0,
) -> list[Candidate]:
    """`depth` is how many candidates each side was asked for (RAG_RETRIEVAL_CANDIDATES)."""
    found = candidates(vector, keyword)
    if method == "rrf":
        reciprocal_rank(found, rrf_k)
    elif method == "weighted":
        weighted(found, vector_weight)
    else:
        adaptive(found, depth, sharpness)
    return ranked(found)
