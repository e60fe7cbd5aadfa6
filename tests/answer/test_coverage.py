"""'Not in the documents', decided from retrieval evidence: over data/docs on the real bundled models, far
questions in both languages are declined before the chat model is asked, and covered ones are answered."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest.run import ingest_folder
from rag.answer import coverage
from rag.answer.pipeline import RagPipeline
from rag.answer.prompts import NOT_COVERED
from tests.support.helpers import make_settings

DOCS = Path(__file__).resolve().parents[2] / "data" / "docs"


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory, real_engine: str) -> RagPipeline:
    settings = make_settings(tmp_path_factory.mktemp("coverage"), real_engine, temperature=0.0)
    ingest_folder(DOCS, settings)
    return RagPipeline.open(settings)


@pytest.mark.parametrize(
    ("question", "lang"),
    [
        ("澳大利亚的首都是哪里？", "zh"),
        ("Ollama 公司的创始人是谁？", "zh"),
        ("What is the capital of Australia?", "en"),
    ],
)
def test_a_question_the_documents_do_not_cover_is_declined_without_asking_the_model(pipeline, question, lang):
    answer = pipeline.ask(question)
    assert (answer.answer, answer.abstained, answer.sources) == (NOT_COVERED[lang], True, [])
    assert answer.usage.prompt_tokens == 0  # declined before the chat model was called


@pytest.mark.parametrize(
    ("question", "source"),
    [("storage/ 目录可以放在 NFS 网络共享盘上吗？", "zh/常见问题.txt"), ("Do I need a GPU?", "en/faq.txt")],
)
def test_a_question_the_documents_cover_keeps_its_sources(pipeline, question, source):
    found = pipeline.retrieve(question, mode="hybrid")
    kept = pipeline.relevant(found, question, "hybrid")
    assert source in [s.source for s in kept]
    assert [s.n for s in kept] == list(range(1, len(kept) + 1))


def test_the_evidence_is_a_share_not_a_score(pipeline):
    """The same question against the same documents reads the same whatever the BM25 scale."""
    question = "What is the capital of Australia?"
    far = coverage.evidence(question, pipeline.retrieve(question, mode="hybrid"), pipeline.keywords)
    near = coverage.evidence("Do I need a GPU?", pipeline.retrieve("Do I need a GPU?", mode="hybrid"),
                             pipeline.keywords)
    assert 0.0 <= far.matched < near.matched <= 1.0


def test_vector_mode_keeps_the_cosine_rule(pipeline):
    strict = pipeline.settings.model_copy(update={"min_score": 0.99})
    found = pipeline.retrieve("Do I need a GPU?", mode="vector")
    assert coverage.relevant("Do I need a GPU?", found, "vector", pipeline.keywords, strict) == []
    assert coverage.relevant("Do I need a GPU?", found, "vector", pipeline.keywords, pipeline.settings)
