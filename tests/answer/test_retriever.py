"""The hybrid retriever as a LlamaIndex user meets it: a BaseRetriever whose nodes carry our metadata, inside
LlamaIndex's own query and chat engines."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from llama_index.core.chat_engine import CondensePlusContextChatEngine
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.schema import MetadataMode

from ingest.run import ingest_folder
from rag.answer.retriever import HybridRetriever
from rag.config import Settings
from rag.ollama import build_llm
from tests.support.helpers import CHINESE, ENGLISH, make_settings, write

QUESTION = "When are the pumps inspected?"


def ingested(tmp_path: Path, engine: str, **overrides: object) -> Settings:
    write(tmp_path / "docs" / "cooling.md", "# Cooling\n\n" + ENGLISH * 2)
    write(tmp_path / "docs" / "backup.txt", CHINESE)
    settings = make_settings(tmp_path, engine, **overrides)
    ingest_folder(tmp_path / "docs", settings)
    return settings


def test_nodes_carry_our_metadata_and_both_sides_scores(tmp_path, fast_engine):
    retriever = HybridRetriever.open(ingested(tmp_path, fast_engine), top_k=2)
    nodes = retriever.retrieve("Pumps are inspected every Tuesday")
    assert 1 <= len(nodes) <= 2
    best = nodes[0]
    meta = best.node.metadata
    assert meta["source"] == "cooling.md"
    assert best.node.node_id == meta["chunk_id"]
    assert best.node.get_content() == (tmp_path / "docs" / "cooling.md").read_text()[meta["start"]:meta["end"]]
    assert meta["keyword_rank"] == 1
    assert meta["keyword_score"] > 0
    assert meta["vector_rank"] is not None
    assert meta["fused_score"] == best.score
    # The model is shown where a chunk comes from, not our scores.
    shown = best.node.get_content(metadata_mode=MetadataMode.LLM)
    assert "cooling.md" in shown
    assert "keyword_score" not in shown


def test_async_retrieval_gives_the_same_nodes(tmp_path, fast_engine):
    retriever = HybridRetriever.open(ingested(tmp_path, fast_engine))
    sync = [n.node.node_id for n in retriever.retrieve(QUESTION)]
    assert [n.node.node_id for n in asyncio.run(retriever.aretrieve(QUESTION))] == sync


@pytest.mark.slow
def test_a_llamaindex_query_engine_and_chat_engine_answer_from_it(tmp_path, real_engine):
    settings = ingested(tmp_path, real_engine, temperature=0.0)
    retriever = HybridRetriever.open(settings, top_k=2)
    llm = build_llm(settings)  # always passed: LlamaIndex's global Settings would fall back to OpenAI

    response = RetrieverQueryEngine.from_args(retriever, llm=llm).query(QUESTION)
    assert str(response).strip()
    assert response.source_nodes[0].node.metadata["source"] == "cooling.md"

    chat = CondensePlusContextChatEngine.from_defaults(retriever, llm=llm)
    reply = chat.chat(QUESTION)
    assert reply.response.strip()
    assert reply.source_nodes[0].node.metadata["source"] == "cooling.md"
