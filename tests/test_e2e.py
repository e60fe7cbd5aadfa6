"""End to end on the real bundled models: ingest data/docs, ask, check answers and citations."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from ingest.loaders import LoadLimits, load
from ingest.run import ingest_folder
from rag.serve.app import create_app
from tests.support.helpers import make_settings

pytestmark = pytest.mark.slow

DOCS = Path(__file__).resolve().parent.parent / "data" / "docs"


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, real_engine: str):
    tmp = tmp_path_factory.mktemp("e2e")
    settings = make_settings(tmp, real_engine, temperature=0.0, min_score=0.0)
    summary = ingest_folder(DOCS, settings).summary
    assert summary is not None
    assert summary.failed == 0
    assert summary.added == 8
    with TestClient(create_app(settings)) as c:
        yield c


def ask(client: TestClient, question: str, **extra) -> dict:
    r = client.post("/ask", json={"question": question, **extra})
    assert r.status_code == 200, r.text
    return r.json()


def test_answer_contains_the_fact_and_cites_its_document_and_page(client):
    body = ask(client, "At what time does the nightly snapshot of storage/ run?")
    pdf = [s for s in body["sources"] if s["source"] == "en/operations-handbook.pdf"]
    assert pdf, body["sources"]
    assert pdf[0]["page"] == 2
    assert "02:30" in pdf[0]["text"]
    assert "02:30" in body["answer"]


def test_the_document_holding_the_fact_is_among_the_sources(client):
    body = ask(client, "What port does rag serve listen on by default?")
    assert "en/user-guide.md" in [s["source"] for s in body["sources"]]


def test_chinese_question_retrieves_the_chinese_document(client):
    body = ask(client, "在内网机器上用哪个环境变量指定 Ollama 的模型目录？")
    assert "zh/部署说明.html" in [s["source"] for s in body["sources"]]


def test_every_citation_is_verbatim_in_the_extracted_text_at_its_offsets(client):
    questions = [
        "What port does rag serve listen on by default?",
        "How often should GET /health be polled?",
        "storage/ 目录可以放在网络共享盘上吗？",
        "What error code comes with HTTP 409?",
    ]
    limits = LoadLimits()
    checked = 0
    for q in questions:
        r = client.post("/retrieve", json={"question": q, "top_k": 6})
        for s in r.json()["sources"]:
            doc = load(DOCS / s["source"], DOCS, limits)
            page_text = next(p.text for p in doc.pages if p.number == s["page"])
            assert page_text[s["start"] : s["end"]] == s["text"]
            checked += 1
    assert checked == 24


def test_streamed_answer_on_real_model(client):
    with client.stream("POST", "/ask", json={"question": "What prefix do incident tickets use?", "stream": True}) as r:
        lines = [line for line in r.iter_lines() if line]
    assert len(lines) >= 3
