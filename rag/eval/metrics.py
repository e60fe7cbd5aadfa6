"""Evaluation metrics: answer correctness, retrieval hits, AUROC, percentiles and bootstrap intervals."""

from __future__ import annotations

import re
import statistics
import string
import unicodedata
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rag.index.tokens import CJK

# A CJK character is a token on its own (character F1 for Chinese); anything else splits on spaces.
_TOKEN = re.compile(rf"[{CJK}]|[^\s{CJK}]+")
_ARTICLES = re.compile(r"\b(a|an|the)\b")

BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0


def _is_punct(ch: str) -> bool:
    return ch in string.punctuation or unicodedata.category(ch).startswith(("P", "S"))


def normalize(text: str) -> str:
    """SQuAD-style: lowercase, punctuation (ASCII and CJK) and English articles removed, spaces collapsed."""
    text = "".join(" " if _is_punct(ch) else ch for ch in text.lower())
    return " ".join(_ARTICLES.sub(" ", text).split())


def normalized_tokens(text: str) -> list[str]:
    """Normalised tokens for scoring: English words, and single characters for Chinese (not BM25's tokens)."""
    return _TOKEN.findall(normalize(text))


def token_f1(prediction: str, reference: str) -> float:
    """Token F1 between an answer and a reference (character F1 where the text is Chinese)."""
    pred, ref = normalized_tokens(prediction), normalized_tokens(reference)
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def exact_match(prediction: str, reference: str) -> float:
    return float(normalized_tokens(prediction) == normalized_tokens(reference))


def word_overlap(answer: str, context: str) -> float:
    """Baseline faithfulness: the fraction of the answer's tokens (characters for Chinese) found in the context."""
    said = normalized_tokens(answer)
    if not said:
        return 0.0
    known = set(normalized_tokens(context))
    return sum(t in known for t in said) / len(said)


# -- retrieval --------------------------------------------------------------------------------------


def _same_path(a: str, b: str) -> bool:
    """Equal paths, or one a suffix of the other at a folder boundary (data/docs/x.md matches x.md)."""
    a, b = (p.replace("\\", "/").removeprefix("./").strip("/") for p in (a, b))
    return a == b or a.endswith("/" + b) or b.endswith("/" + a)


def source_matches(retrieved: Mapping[str, Any], reference: Mapping[str, Any]) -> bool:
    """A retrieved chunk matches a reference by its file path, and by page when the reference names one."""
    if not _same_path(str(retrieved.get("source", "")), str(reference["source"])):
        return False
    return reference.get("page") is None or retrieved.get("page") == reference["page"]


def first_hit(retrieved: Sequence[Mapping[str, Any]], references: Sequence[Mapping[str, Any]]) -> int | None:
    """1-based rank of the first retrieved chunk matching any reference, or None."""
    for rank, chunk in enumerate(retrieved, start=1):
        if any(source_matches(chunk, ref) for ref in references):
            return rank
    return None


def retrieval_scores(rank: int | None, ks: Sequence[int] = (1, 3, 5)) -> dict[str, float]:
    scores = {f"hit@{k}": float(rank is not None and rank <= k) for k in ks}
    scores["mrr"] = 1.0 / rank if rank else 0.0
    return scores


# -- classification ---------------------------------------------------------------------------------


def auroc(scores: Sequence[float], positive: Sequence[bool]) -> float | None:
    """Area under the ROC curve as the Mann–Whitney statistic: P(pos > neg), ties counting half."""
    pos = [s for s, p in zip(scores, positive, strict=True) if p]
    neg = [s for s, p in zip(scores, positive, strict=True) if not p]
    if not pos or not neg:
        return None
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def balanced_accuracy(scores: Sequence[float], positive: Sequence[bool], threshold: float) -> float | None:
    """Mean of the true-positive and true-negative rates, predicting positive when score >= threshold."""
    pairs = list(zip(scores, positive, strict=True))
    pos = [s >= threshold for s, p in pairs if p]
    neg = [s < threshold for s, p in pairs if not p]
    if not pos or not neg:
        return None
    return (sum(pos) / len(pos) + sum(neg) / len(neg)) / 2


# -- aggregates -------------------------------------------------------------------------------------


def bootstrap_ci(
    values: Sequence[float], seed: int = BOOTSTRAP_SEED, resamples: int = BOOTSTRAP_RESAMPLES, level: float = 0.95
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the mean; a fixed seed gives the same interval every time."""
    if not values:
        return None
    data = np.asarray(values, dtype=float)
    picks = np.random.default_rng(seed).integers(0, len(data), size=(resamples, len(data)))
    means = data[picks].mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def mean_with_ci(values: Sequence[float], seed: int = BOOTSTRAP_SEED) -> dict[str, Any]:
    """{"mean", "ci95", "n"}; mean and interval are None when there is nothing to average."""
    ci = bootstrap_ci(values, seed)
    return {
        "mean": round(statistics.fmean(values), 4) if values else None,
        "ci95": [round(ci[0], 4), round(ci[1], 4)] if ci else None,
        "n": len(values),
    }


def percentiles(values: Sequence[float]) -> dict[str, Any]:
    if not values:
        return {"p50": None, "p95": None, "n": 0}
    p50, p95 = np.percentile(np.asarray(values, dtype=float), [50, 95])
    return {"p50": round(float(p50), 1), "p95": round(float(p95), 1), "n": len(values)}


def spread(values: Sequence[float | None]) -> dict[str, Any]:
    """Mean, min, max and sample standard deviation over repeated runs (None runs left out)."""
    got = [v for v in values if v is not None]
    if not got:
        return {"runs": list(values), "mean": None, "min": None, "max": None, "stdev": None}
    return {
        "runs": [None if v is None else round(v, 4) for v in values],
        "mean": round(statistics.fmean(got), 4),
        "min": round(min(got), 4),
        "max": round(max(got), 4),
        "stdev": round(statistics.stdev(got), 4) if len(got) > 1 else 0.0,
    }
