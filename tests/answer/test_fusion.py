"""Adaptive fusion on constructed rankings: a side whose scores say nothing about the question (flat cosines,
as an embedding model gives text in a language it does not know; no keyword term matched) must not pull the
answer down, and each side still wins where it alone is clear."""

from __future__ import annotations

import random

import pytest

from rag.answer.fusion import agreement, candidates, fuse, informativeness

DEPTH = 20


def flat_side(rng: random.Random, gold: str, level: float, noise: float) -> list[tuple[str, float]]:
    """Twenty chunks whose scores differ by noise only; the gold chunk somewhere in the lower half."""
    ids = [f"c{i}" for i in range(DEPTH - 1)]
    ids.insert(rng.randrange(8, DEPTH), gold)
    return [(cid, level - i * noise) for i, cid in enumerate(ids)]


def clear_side(rng: random.Random, gold: str, top: float, rest: float) -> list[tuple[str, float]]:
    """The gold chunk first, far above a spread of others, in an order of their own."""
    others = [(f"c{i}", rest * rng.uniform(0.3, 1.0)) for i in range(12)]  # the same chunks as the other side
    return [(gold, top), *sorted(others, key=lambda x: -x[1])]


def mrr(rankings: list[list[str]], gold: str = "gold") -> float:
    return sum(1 / (r.index(gold) + 1) for r in rankings if gold in r[:10]) / len(rankings)


def test_informativeness_reads_flat_scores_as_uninformative_and_a_clear_winner_as_informative():
    rng = random.Random(1)
    flat = [s for _, s in flat_side(rng, "gold", 0.45, 0.002)]
    clear = [s for _, s in clear_side(rng, "gold", 14.0, 4.0)]
    assert informativeness(clear, DEPTH) > 2 * informativeness(flat, DEPTH)
    assert informativeness([], DEPTH) == 0.0
    assert informativeness([3.0], DEPTH) > 0  # one keyword hit against chunks that share no term


@pytest.mark.parametrize("flat", ["vector", "keyword"])
def test_fusion_is_never_below_the_clear_side_when_the_other_is_flat(flat):
    rng = random.Random(7)
    fused, single = [], []
    for _ in range(50):
        if flat == "vector":
            vector, keyword = flat_side(rng, "gold", 0.45, 0.002), clear_side(rng, "gold", 14.0, 6.0)
        else:
            vector, keyword = clear_side(rng, "gold", 0.8, 0.55), flat_side(rng, "gold", 2.0, 0.01)
        fused.append([c.chunk_id for c in fuse(vector, keyword, "adaptive", depth=DEPTH)])
        single.append([cid for cid, _ in (keyword if flat == "vector" else vector)])
    assert mrr(fused) >= mrr(single) - 0.01
    assert mrr(fused) == 1.0


def test_a_fixed_weight_lets_the_flat_side_push_the_answer_down():
    """The case above is one the old default loses: the test would not notice a return to a fixed weight."""
    rng = random.Random(7)
    vector, keyword = flat_side(rng, "gold", 0.45, 0.002), clear_side(rng, "gold", 14.0, 6.0)
    fixed = [c.chunk_id for c in fuse(vector, keyword, "weighted", vector_weight=0.5)]
    adaptive = [c.chunk_id for c in fuse(vector, keyword, "adaptive", depth=DEPTH)]
    assert adaptive[0] == "gold"
    assert fixed[0] != "gold"


def test_with_no_keyword_match_the_vector_order_stands():
    vector = [(f"c{i}", 0.9 - i * 0.03) for i in range(DEPTH)]
    assert [c.chunk_id for c in fuse(vector, [], "adaptive", depth=DEPTH)] == [cid for cid, _ in vector]


def test_a_clear_vector_side_that_the_keyword_side_corroborates_decides():
    """Paraphrase: the keyword side finds the same chunks but cannot tell them apart; the vectors can."""
    vector = [("a", 0.9), *[(f"c{i}", 0.3 - i * 0.01) for i in range(19)]]
    keyword = [*[(f"c{i}", 5.0 - i * 0.05) for i in range(10)], ("a", 4.4)]
    assert fuse(vector, keyword, "adaptive", depth=DEPTH)[0].chunk_id == "a"


def test_a_vector_side_that_shares_nothing_with_a_clear_keyword_side_is_discounted():
    """An embedding model that does not read the question's language finds other chunks than those holding
    its terms; its own clear winner must not go first."""
    vector = [("a", 0.9), *[(f"v{i}", 0.3 - i * 0.01) for i in range(19)]]
    keyword = [("b", 20.0), *[(f"k{i}", 2.0 - i * 0.1) for i in range(19)]]
    assert agreement(candidates(vector, keyword)) == 0.0
    assert fuse(vector, keyword, "adaptive", depth=DEPTH)[0].chunk_id == "b"
