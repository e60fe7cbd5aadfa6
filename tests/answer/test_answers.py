"""What /ask's pipeline says when the chat model says nothing: the embeddings come from the deterministic
engine, the chat replies from a scripted Ollama (a real HTTP server on loopback)."""

from __future__ import annotations

from ingest.run import ingest_folder
from rag import ollama as llm
from rag.answer.pipeline import NO_ANSWER, RagPipeline
from tests.support.helpers import CHINESE, ENGLISH, make_settings, write
from tests.support.scripted_ollama import scripted_ollama


def test_an_empty_generation_becomes_a_no_answer_notice_or_the_evidence(tmp_path, fast_engine):
    write(tmp_path / "docs" / "cooling.md", ENGLISH)
    write(tmp_path / "docs" / "backup.txt", CHINESE)
    settings = make_settings(tmp_path, fast_engine)
    ingest_folder(tmp_path / "docs", settings)
    with scripted_ollama([""]) as (chat_url, script):
        chat = llm.build_llm(make_settings(tmp_path, chat_url))
        pipeline = RagPipeline.open(settings, llm=chat)
        english = pipeline.ask("When are the pumps inspected?", answer_mode="generate")
        chinese = pipeline.ask("备份文件保存多久？", answer_mode="generate")
        checked = pipeline.ask("When are the pumps inspected?", answer_mode="auto")
    assert len(script.requests) == 3  # the model was asked, and answered nothing
    assert (english.answer, english.abstained) == (NO_ANSWER["en"], True)
    assert (chinese.answer, chinese.abstained) == (NO_ANSWER["zh"], True)
    assert english.sources
    assert chinese.sources
    # auto: nothing the model said can be shown, so the sentence of the source that answers it is
    assert checked.answer_source == "evidence"
    assert checked.answer.endswith("Pumps are inspected every Tuesday. [1]")
