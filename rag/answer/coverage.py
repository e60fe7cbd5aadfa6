"""Coverage: whether the documents cover a question, decided from retrieval evidence before the model is asked.

A raw cosine threshold means something else for every embedding model and language (all-MiniLM gives Chinese
questions that DRCD does not cover a best cosine of 0.45 to 0.80, about what covered ones get), and a BM25
score grows with the corpus and the question's length. So the decision reads evidence that is comparable
across corpora and languages:

- **matched**: the share of the question's keyword weight (IDF) that one retrieved chunk holds. A question
  about something the documents never name ("the capital of Australia", "Ollama's founder") leaves its rarest
  terms unmatched, however many of its common words match.
- **agreement**: one chunk ranked near the top by both sides. Two sides that are each only guessing
  rarely guess the same chunk; when they agree, the chunk answers the question more often than not, also
  when its wording differs from the question's.

A question is covered when one source holds at least RAG_COVERAGE_MIN_MATCHED (0.4) of its keyword weight,
or when the sides agree. Chosen on the tune part of bench/retrieval_bench.py's public sets (DRCD, SQuAD), on
a 0.05 grid, as the share that declines the most unanswerable questions there while declining under 5% of
the answerable ones (both sets together); the measured rates on the other parts are in the README. Without
keyword evidence (vector mode, or the keyword index out) the old rule stays: cosine >= RAG_MIN_SCORE.
"""

from __future__ import annotations

from dataclasses import dataclass

from rag.answer.models import Source
from rag.config import Settings
from rag.index.bm25 import KeywordIndex

AGREE_RANK = 3  # "near the top" on both sides: within each side's first three


@dataclass(frozen=True)
class Evidence:
    matched: float  # the most of the question's keyword weight one source holds, 0 to 1
    agreed: bool  # a source in the first AGREE_RANK of both sides


def evidence(question: str, sources: list[Source], keywords: KeywordIndex) -> Evidence:
    shares = keywords.matched(question, [s.chunk_id for s in sources])
    agreed = any(_near(s.vector_rank) and _near(s.keyword_rank) for s in sources)
    return Evidence(max(shares.values(), default=0.0), agreed)


def covered(e: Evidence, settings: Settings) -> bool:
    return e.matched >= settings.coverage_min_matched or e.agreed


def relevant(
    question: str, sources: list[Source], mode: str, keywords: KeywordIndex, settings: Settings
) -> list[Source]:
    """The sources the model is given, renumbered from 1; none when the documents do not cover the question."""
    if mode == "vector":  # no keyword evidence: the cosine is all there is
        kept = [s for s in sources if s.score >= settings.min_score]
    elif covered(evidence(question, sources, keywords), settings):
        # The model is given the sources with some evidence of their own: a term of the question, or a cosine
        # of at least RAG_MIN_SCORE (a question the documents cover can still retrieve a stray chunk).
        kept = [s for s in sources if (s.keyword_score or 0.0) > 0 or (s.vector_score or 0.0) >= settings.min_score]
    else:
        kept = []
    for n, s in enumerate(kept, start=1):
        s.n = n
    return kept


def _near(rank: int | None) -> bool:
    return rank is not None and rank <= AGREE_RANK
