"""Evaluation metrics, checked against values worked out by hand."""

from __future__ import annotations

import pytest

from rag.eval import metrics
from rag.eval.judge import answer_sentences
from rag.eval.run import missed_thresholds, parse_thresholds


def test_token_f1_on_english_words():
    # prediction [port, is, 8080], reference [port, 8080]: P = 2/3, R = 1
    assert metrics.token_f1("The port is 8080.", "port 8080") == pytest.approx(0.8)
    assert metrics.token_f1("nothing alike", "port 8080") == 0.0
    assert metrics.token_f1("", "") == 1.0
    assert metrics.token_f1("", "8080") == 0.0


def test_character_f1_on_chinese():
    # prediction 默 认 300 秒, reference 默 认 是 300 秒: P = 4/4, R = 4/5
    assert metrics.token_f1("默认 300 秒。", "默认是 300 秒。") == pytest.approx(2 * 0.8 / 1.8)
    assert metrics.normalized_tokens("建议设为120。") == ["建", "议", "设", "为", "120"]


def test_exact_match_ignores_case_punctuation_articles_and_spaces():
    assert metrics.exact_match("The INC-RAG!", "inc rag") == 1.0
    assert metrics.exact_match("本地磁盘。", "本地 磁盘") == 1.0
    assert metrics.exact_match("port 8080", "port 8081") == 0.0


def test_word_overlap_baseline():
    assert metrics.word_overlap("runs at 02:30", "The snapshot runs at 02:30.") == 1.0
    assert metrics.word_overlap("runs at 04:00", "The snapshot runs at 02:30.") == pytest.approx(2 / 4)
    assert metrics.word_overlap("婚假15天", "婚假共 15 天。") == 1.0


def test_auroc_counts_ties_as_half():
    # pairs (pos, neg): (1, .5) win, (1, 0) win, (.5, .5) tie, (.5, 0) win -> 3.5 / 4
    assert metrics.auroc([1, 0.5, 0.5, 0], [True, True, False, False]) == 0.875
    assert metrics.auroc([0.3, 0.3, 0.3], [True, False, True]) == 0.5
    assert metrics.auroc([0, 1], [True, False]) == 0.0
    assert metrics.auroc([1, 1], [True, True]) is None


def test_balanced_accuracy_at_a_threshold():
    scores, labels = [1.0, 0.5, 1.0, 0.0], [True, True, False, False]
    assert metrics.balanced_accuracy(scores, labels, 1.0) == pytest.approx((1 / 2 + 1 / 2) / 2)
    assert metrics.balanced_accuracy(scores, labels, 0.5) == pytest.approx((2 / 2 + 1 / 2) / 2)


def test_hits_and_mrr_match_by_source_and_page():
    retrieved = [{"source": "en/manual.pdf", "page": 1}, {"source": "en/guide.md", "page": None},
                 {"source": "en/manual.pdf", "page": 2}]
    rank = metrics.first_hit(retrieved, [{"source": "en/manual.pdf", "page": 2}])
    assert rank == 3
    assert metrics.retrieval_scores(rank) == {"hit@1": 0.0, "hit@3": 1.0, "hit@5": 1.0, "mrr": pytest.approx(1 / 3)}
    assert metrics.first_hit(retrieved, [{"source": "en/manual.pdf"}]) == 1
    assert metrics.first_hit(retrieved, [{"source": "docs/en/guide.md"}]) == 2  # folder prefix of another root
    assert metrics.first_hit(retrieved, [{"source": "n/guide.md"}]) is None  # not at a folder boundary
    assert metrics.retrieval_scores(None) == {"hit@1": 0.0, "hit@3": 0.0, "hit@5": 0.0, "mrr": 0.0}


def test_bootstrap_interval_is_deterministic_and_brackets_the_mean():
    values = [(i * 7) % 11 / 10 for i in range(40)]
    first, again = metrics.bootstrap_ci(values), metrics.bootstrap_ci(values)
    assert first == again
    assert first is not None
    assert first[0] < sum(values) / len(values) < first[1]
    assert metrics.bootstrap_ci(values, seed=1) != first
    assert metrics.bootstrap_ci([0.7, 0.7]) == pytest.approx((0.7, 0.7))
    assert metrics.mean_with_ci([]) == {"mean": None, "ci95": None, "n": 0}


def test_percentiles_and_spread():
    assert metrics.percentiles([10, 20, 30, 40, 50]) == {"p50": 30.0, "p95": 48.0, "n": 5}
    s = metrics.spread([0.5, 0.7, None])
    assert (s["mean"], s["min"], s["max"], s["stdev"]) == (0.6, 0.5, 0.7, pytest.approx(0.1414, abs=1e-4))


def test_fail_under_spec_parses_and_reports_misses():
    assert parse_thresholds("faithfulness=0.8, hit@5=0.9") == {"faithfulness": 0.8, "hit@5": 0.9}
    for bad in ("faithfulness", "speed=0.5", "mrr=high", "hit@1=1.5", ""):
        with pytest.raises(ValueError, match=r"."):
            parse_thresholds(bad)
    summary = {"metrics": {"faithfulness": {"mean": 0.62}, "hit@5": {"mean": 0.95}, "mrr": {"mean": None}}}
    assert missed_thresholds(summary, {"faithfulness": 0.8, "hit@5": 0.9, "mrr": 0.5}) == [
        "faithfulness 0.620 < 0.8", "mrr: no rows were scored (minimum 0.5)"]


def test_sentences_split_on_english_and_chinese_ends_without_citations():
    text = ("By default it listens on 127.0.0.1 port 8080 [1]. It was added in v0.0.3 [2, 3]! "
            "不可以。放在本地磁盘上！好吗？")
    assert answer_sentences(text) == ["By default it listens on 127.0.0.1 port 8080.", "It was added in v0.0.3!",
                                     "不可以。", "放在本地磁盘上！", "好吗？"]
    assert answer_sentences("[1]") == []
