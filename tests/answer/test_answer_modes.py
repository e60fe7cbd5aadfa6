"""Answer modes and the support check: evidence sentences with exact offsets, the sentence gate, the fallback.
Embeddings come from the deterministic engine; the chat model's replies from a scripted Ollama (a real HTTP
server on loopback), so each case says exactly what the model said. Quality on the bundled models is in
bench/answer_bench.py and tests/test_e2e.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingest.loaders import LoadLimits, load
from ingest.run import ingest_folder
from rag import ollama as llm
from rag.answer.pipeline import NOT_ANSWERED, NOT_SUPPORTED, RagPipeline
from rag.ollama import FACTOID_TOKENS
from tests.support.helpers import CHINESE, ENGLISH, make_settings, write
from tests.support.scripted_ollama import scripted_ollama

PUMPS = "When are the pumps inspected?"


@pytest.fixture
def docs(tmp_path: Path, fast_engine: str):
    root = tmp_path / "docs"
    write(root / "cooling.md", "# Cooling\n\n" + ENGLISH)
    write(root / "backup.txt", CHINESE)
    settings = make_settings(tmp_path, fast_engine, top_k=2)
    ingest_folder(root, settings)
    return root, settings


def pipeline_saying(settings, url: str) -> RagPipeline:
    return RagPipeline.open(settings, llm=llm.build_llm(settings.model_copy(update={"ollama_host": url})))


def test_extract_quotes_the_answering_sentence_with_exact_offsets_and_no_chat_call(docs):
    root, settings = docs
    with scripted_ollama(["never asked"]) as (url, script):
        english = pipeline_saying(settings, url).ask(PUMPS, answer_mode="extract")
        chinese = pipeline_saying(settings, url).ask("备份文件保存多久？", answer_mode="extract")
    assert script.requests == []
    assert english.answer == "Pumps are inspected every Tuesday. [1]"
    assert (english.answer_source, english.answer_mode) == ("evidence", "extract")
    assert "三十天" in chinese.answer
    for answer in (english, chinese):
        top = answer.evidence[0]
        source = next(s for s in answer.sources if s.n == top.n)
        page = load(root / source.source, root, LoadLimits()).pages[0].text
        assert page[top.start:top.end] == top.text  # offsets into the extracted text, as a source's are
        assert all(c.supported for c in answer.claims)


def test_auto_keeps_a_supported_answer_as_the_model_said_it(docs):
    _, settings = docs
    with scripted_ollama(["Pumps are inspected every Tuesday [1]."]) as (url, _):
        answer = pipeline_saying(settings, url).ask(PUMPS)
    assert answer.answer == "Pumps are inspected every Tuesday [1]."
    assert (answer.answer_source, answer.model_answer) == ("model", None)
    [claim] = answer.claims
    assert (claim.supported, claim.source_n, claim.citation_ok) == (True, 1, True)


def test_auto_holds_back_the_first_unsupported_sentence_and_what_follows(docs):
    _, settings = docs
    said = "Pumps are inspected every Tuesday [1]. They were built in Sweden in 1985. They are painted blue."
    with scripted_ollama([said]) as (url, _):
        events = list(pipeline_saying(settings, url).ask_stream(PUMPS))
    done = events[-1]
    shown = "".join(e["text"] for e in events if e["type"] == "token")
    assert done["answer"] == shown.strip() == "Pumps are inspected every Tuesday [1]."
    assert done["model_answer"] == said
    assert done["answer_source"] == "model"


def test_auto_answers_with_the_evidence_when_nothing_the_model_said_is_supported(docs):
    _, settings = docs
    with scripted_ollama(["Pumps are inspected every Friday at 09:00 by the Swedish crew."]) as (url, _):
        events = list(pipeline_saying(settings, url).ask_stream(PUMPS))
    done = events[-1]
    assert done["answer"] == f"{NOT_SUPPORTED['en']} Pumps are inspected every Tuesday. [1]"
    assert "".join(e["text"] for e in events if e["type"] == "token").strip() == done["answer"]
    assert done["answer_source"] == "evidence"
    assert "Friday" in done["model_answer"]
    assert [c["supported"] for c in done["claims"]] == [True]  # the quoted sentence, not the notice


def test_generate_shows_the_model_but_flags_what_no_source_supports_and_wrong_citations(docs):
    _, settings = docs
    said = "Pumps are inspected every Tuesday [2]. Inspections started in 1985."
    with scripted_ollama([said]) as (url, _):
        answer = pipeline_saying(settings, url).ask(PUMPS, answer_mode="generate")
    assert answer.answer == said
    first, second = answer.claims
    assert (first.supported, first.source_n, first.cited, first.citation_ok) == (True, 1, [2], False)
    assert not second.supported


@pytest.mark.parametrize("said", [
    "Pumps are inspected every Tuesday. Pumps are inspected every Tuesday. Pumps are inspected every Tuesday.",
    "Pumps are inspected every Tuesday.\n[2] (backup.txt) 数据中心的备份每天凌晨两点开始。",
    "Pumps are inspected every Tuesday.\nSources: cooling.md",
])
def test_generation_stops_at_a_loop_or_a_copied_source_header(docs, said):
    _, settings = docs
    with scripted_ollama([said]) as (url, _):
        answer = pipeline_saying(settings, url).ask(PUMPS, answer_mode="generate")
    assert answer.answer == "Pumps are inspected every Tuesday."
    assert answer.model_answer == said


def test_a_factoid_gets_a_short_generation_budget(docs):
    _, settings = docs
    with scripted_ollama(["Every Tuesday."]) as (url, script):
        pipeline = pipeline_saying(settings, url)
        pipeline.short_llm = llm.build_llm(
            settings.model_copy(update={"ollama_host": url}), num_predict=FACTOID_TOKENS
        )
        pipeline.ask("How often are the pumps inspected?")
        pipeline.ask("Describe the cooling loop.")
    assert [r["options"]["num_predict"] for r in script.requests] == [FACTOID_TOKENS, settings.num_predict]


def test_the_api_takes_the_answer_mode_and_returns_evidence_and_claims(docs):
    from fastapi.testclient import TestClient

    from rag.serve.app import create_app

    _, settings = docs
    with TestClient(create_app(settings)) as client:
        r = client.post("/ask", json={"question": PUMPS, "answer_mode": "extract"})
        bad = client.post("/ask", json={"question": PUMPS, "answer_mode": "guess"})
    body = r.json()
    assert body["answer_source"] == "evidence"
    assert {"n", "text", "start", "end", "score"} <= set(body["evidence"][0])
    assert {"text", "supported", "source_n", "start", "end", "score"} <= set(body["claims"][0])
    assert bad.status_code == 422
    assert "answer_mode" in bad.json()["error"]["message"]


def test_auto_adds_the_evidence_when_the_supported_answer_does_not_give_what_was_asked(docs):
    _, settings = docs
    with scripted_ollama(["Pumps are inspected [1]."]) as (url, _):
        events = list(pipeline_saying(settings, url).ask_stream("How often are the pumps inspected?"))
    done = events[-1]
    assert done["answer"] == (
        f"Pumps are inspected [1].\n\n{NOT_ANSWERED['en']} Pumps are inspected every Tuesday. [1]"
    )
    assert "".join(e["text"] for e in events if e["type"] == "token").strip() == done["answer"]
    assert done["answer_source"] == "evidence"
    assert all(c["supported"] for c in done["claims"])


def test_a_sentence_that_states_nothing_is_not_supported(docs):
    _, settings = docs
    with scripted_ollama(["The answer is:"]) as (url, _):
        answer = pipeline_saying(settings, url).ask(PUMPS)
    assert answer.answer_source == "evidence"
    assert answer.model_answer == "The answer is:"
