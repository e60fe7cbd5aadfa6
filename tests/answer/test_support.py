"""The support check on labelled answers: it must separate supported from unsupported ones in both languages
(the project's cases in data/eval/faithfulness.jsonl, where its threshold was chosen), and say why."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rag.answer.models import Source
from rag.answer.support import SUPPORTED, SupportChecker, claim_texts, support_score
from rag.eval import metrics

CASES = [json.loads(line) for line in
         (Path(__file__).resolve().parents[2] / "data" / "eval" / "faithfulness.jsonl").read_text().splitlines()]
CONTEXT = "The nightly snapshot of storage/ runs at 02:30. A snapshot must not be taken while rag ingest is writing."


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_the_check_separates_the_labelled_answers(lang):
    checker = SupportChecker()
    cases = [c for c in CASES if c["lang"] == lang]
    scores = [support_score(checker, c["answer"], c["context"]) for c in cases]
    assert metrics.auroc(scores, [c["label"] == "supported" for c in cases]) >= 0.85


@pytest.mark.parametrize(("claim", "supported"), [
    ("The snapshot runs at 02:30.", True),
    ("The snapshot runs at 03:30.", False),  # a changed number
    ("The snapshot runs at 02:30 in RAG_BACKUP_DIR.", False),  # an identifier the source does not name
    ("A snapshot may be taken while rag ingest is writing.", False),  # the negation dropped
    ("A snapshot must not be taken while rag ingest is writing.", True),
    ("快照在凌晨两点半进行。", False),  # nothing of it in an English source
])
def test_each_hard_signal_can_sink_a_claim(claim, supported):
    source = Source(n=1, source="handbook.pdf", page=2, chunk_id="c", score=1.0, text=CONTEXT, start=100)
    got = SupportChecker().claim(claim, [source])
    assert got.supported is supported
    if supported:
        assert got.source_n == 1
        assert got.start is not None
        assert CONTEXT[got.start - 100:got.end - 100 if got.end else None].strip()
        assert got.score >= SUPPORTED


def test_claims_are_sentences_that_state_something():
    assert claim_texts("Yes. It runs at 02:30 [1].\n\n不可以。storage/ 必须放在本地磁盘上。 [2]") == [
        "It runs at 02:30 [1].", "storage/ 必须放在本地磁盘上。"
    ]


@pytest.mark.parametrize("said", ["1. Installation", "The main endpoints are:", "- Backups"])
def test_a_list_heading_or_a_lead_in_is_not_supported(said):
    source = Source(n=1, source="guide.md", page=None, chunk_id="c", score=1.0,
                    text="1. Installation\nThe main endpoints are: /ask and /retrieve. Backups run nightly.", start=0)
    assert not SupportChecker().claim(said, [source]).supported
