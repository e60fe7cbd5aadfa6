"""Hybrid retrieval: the keyword index kept in step by ingest, loaded from disk, fused with vectors, degraded safely."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from ingest.run import ingest_folder
from rag.answer.fusion import fuse
from rag.index.bm25 import CURRENT, REINDEX_HINT
from rag.index.tokens import MAX_QUERY_TOKENS, Tokenizer
from rag.serve.app import create_app
from tests.support.helpers import CHINESE, ENGLISH, make_settings, write
from tests.test_cli import rag

PARAMS = (
    "Set OLLAMA_NUM_PARALLEL to 4 on the gateway nodes. Error E1043 means the disk quota is full. "
    "Firmware 0.0.3 ships with llama3.1:8b and answers on /api/embed. Spare part PN-4471-B fits pump two."
)
OTHER = (
    "Set OLLAMA_KEEP_ALIVE to 30m on the gateway nodes. Error E1051 means the request timed out. "
    "Firmware 0.0.4 ships with llama3.2:3b and answers on /api/chat. Spare part PN-7702-C fits pump one."
)
MEETINGS = "会议室需要提前一天在系统里预订。每次预订最长四个小时，取消预订请在开始前一小时完成。"


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    root = tmp_path / "docs"
    write(root / "cooling.md", "# Cooling\n\n" + ENGLISH * 2)
    write(root / "backup.txt", CHINESE)
    write(root / "meetings.txt", MEETINGS)
    write(root / "params.md", PARAMS)
    write(root / "other.md", OTHER)
    return root


@pytest.fixture
def settings(tmp_path, docs, fast_engine):
    s = make_settings(tmp_path, fast_engine)
    ingest_folder(docs, s)
    return s


def retrieve(client: TestClient, question: str, **extra) -> dict:
    r = client.post("/retrieve", json={"question": question, "debug": True, **extra})
    assert r.status_code == 200, r.text
    return r.json()


def sources(body: dict) -> list[str]:
    return [s["source"] for s in body["sources"]]


# -- tokens ------------------------------------------------------------------------------------------------


def test_identifiers_are_whole_lowercased_terms():
    tokens = Tokenizer().tokens(
        "Set OLLAMA_KEEP_ALIVE for llama3.1:8b via /api/embed; part PN-4471-B, error E1043, version 0.0.3."
    )
    for term in ("ollama_keep_alive", "llama3.1:8b", "api/embed", "pn-4471-b", "e1043", "0.0.3"):
        assert term in tokens
    assert "set" in tokens
    assert "for" not in tokens  # a stop word
    assert "0" not in tokens  # parts of a term are not emitted by default


def test_chinese_is_cut_into_words_the_same_way_every_time():
    tok = Tokenizer()
    first = tok.tokens("GPU显存不足时会出现 ERR_GPU_OOM 错误。")
    assert first == tok.tokens("GPU显存不足时会出现 ERR_GPU_OOM 错误。")
    assert {"gpu", "显存", "不足", "err_gpu_oom", "错误"} <= set(first)
    assert "。" not in first


def test_query_tokens_are_unique_and_capped():
    tok = Tokenizer()
    assert tok.query("backup backup BACKUP tape") == ["backup", "tape"]
    long_question = " ".join(f"word{i}" for i in range(1000))
    assert len(tok.query(long_question)) == MAX_QUERY_TOKENS
    assert tok.query("?? the of !! 的 了") == []


# -- fusion ------------------------------------------------------------------------------------------------


def test_rrf_rewards_agreement_and_weighted_uses_score_gaps():
    vector = [("a", 0.9), ("b", 0.5), ("c", 0.45)]
    keyword = [("c", 12.0), ("d", 1.0)]
    rrf = fuse(vector, keyword, "rrf", rrf_k=60)
    assert rrf[0].chunk_id == "c"  # in both lists beats first in one
    assert rrf[0].fused == pytest.approx(1 / 63 + 1 / 61)
    weighted = fuse(vector, keyword, "weighted", vector_weight=0.5)
    by_id = {c.chunk_id: c for c in weighted}
    assert by_id["c"].fused == pytest.approx(0.5 * 0.0 + 0.5 * 1.0)
    assert by_id["a"].fused == pytest.approx(0.5)
    assert by_id["d"].fused == pytest.approx(0.5 * 1 / 12)
    assert [c.chunk_id for c in weighted] == ["a", "c", "b", "d"]  # tie a/c: a has the better single rank


# -- retrieval through the API ---------------------------------------------------------------------------


def test_exact_identifier_query_finds_its_chunk(settings):
    with TestClient(create_app(settings)) as client:
        for question in ("OLLAMA_NUM_PARALLEL", "0.0.3", "llama3.1:8b", "/api/embed", "PN-4471-B", "E1043"):
            assert sources(retrieve(client, question, mode="keyword")) == ["params.md"], question
            assert sources(retrieve(client, question, mode="hybrid"))[0] == "params.md", question
        assert sources(retrieve(client, "Which firmware ships as version 0.0.3?"))[0] == "params.md"


def test_chinese_query_finds_the_chinese_passage(settings):
    with TestClient(create_app(settings)) as client:
        keyword = retrieve(client, "会议室最长可以预订几个小时？", mode="keyword")
        hybrid = retrieve(client, "会议室最长可以预订几个小时？")
        backup = retrieve(client, "备份文件保存多久？", mode="keyword")
    assert sources(keyword)[0] == "meetings.txt"
    assert sources(hybrid)[0] == "meetings.txt"
    assert sources(backup)[0] == "backup.txt"


def test_retrieve_debug_fields_per_mode(settings):
    with TestClient(create_app(settings)) as client:
        hybrid = retrieve(client, "What does error E1043 mean?", top_k=3)
        vector = retrieve(client, "What does error E1043 mean?", top_k=3, mode="vector")
        plain = client.post("/retrieve", json={"question": "What does error E1043 mean?"}).json()
        bad = client.post("/retrieve", json={"question": "x", "mode": "fuzzy"})
    assert hybrid["mode"] == "hybrid"
    top = hybrid["sources"][0]
    assert top["source"] == "params.md"
    assert top["keyword_rank"] == 1
    assert top["keyword_score"] > 0
    assert top["vector_rank"] is not None
    assert top["vector_score"] is not None
    assert top["fused_score"] == top["score"]
    fused = [s["fused_score"] for s in hybrid["sources"]]
    assert fused == sorted(fused, reverse=True)
    assert vector["mode"] == "vector"
    assert all(s["keyword_rank"] is None and s["fused_score"] is None for s in vector["sources"])
    assert [s["vector_rank"] for s in vector["sources"]] == [1, 2, 3]
    assert not {"vector_score", "keyword_rank", "fused_score"} & set(plain["sources"][0])  # only with debug
    assert bad.status_code == 422
    assert "mode" in bad.json()["error"]["message"]


def test_query_empty_after_tokenising(settings):
    with TestClient(create_app(settings)) as client:
        hybrid = retrieve(client, "?? the of !!", top_k=3)
        keyword = client.post("/ask", json={"question": "?? the of !!", "mode": "keyword"}).json()
    assert len(hybrid["sources"]) == 3  # the vector side alone
    assert all(s["keyword_rank"] is None for s in hybrid["sources"])
    assert keyword["sources"] == []
    assert keyword["abstained"] is True
    assert keyword["answer"] == "The documents do not cover this."


def test_very_long_query(settings):
    question = ("quota " * 500 + " ".join(f"filler{i}" for i in range(400)))[:3990]
    with TestClient(create_app(settings)) as client:
        keyword = retrieve(client, question, mode="keyword")
        hybrid = retrieve(client, question)
    assert sources(keyword) == ["params.md"]  # "quota" is among the first tokens kept
    assert hybrid["sources"]


def test_keyword_hits_pass_the_relevance_filter_that_vectors_fail(settings):
    strict = settings.model_copy(update={"min_score": 0.99})
    with TestClient(create_app(strict)) as client:
        hybrid = client.post("/ask", json={"question": "What is PN-4471-B?"}).json()
        vector = client.post("/ask", json={"question": "What is PN-4471-B?", "mode": "vector"}).json()
    assert [s["source"] for s in hybrid["sources"]] == ["params.md"]
    assert hybrid["mode"] == "hybrid"
    assert vector["sources"] == []
    assert vector["abstained"] is True


# -- kept in step by ingest ------------------------------------------------------------------------------


def test_deleting_a_file_removes_it_from_keyword_results(settings, docs):
    with TestClient(create_app(settings)) as client:
        assert sources(retrieve(client, "PN-4471-B", mode="keyword")) == ["params.md"]
    (docs / "params.md").unlink()
    summary = ingest_folder(docs, settings).summary
    assert summary is not None
    assert summary.deleted == 1
    with TestClient(create_app(settings)) as client:
        assert retrieve(client, "PN-4471-B", mode="keyword")["sources"] == []
        assert "params.md" not in sources(retrieve(client, "PN-4471-B"))
        assert client.get("/health").json()["keyword"]["chunks"] == client.get("/health").json()["store"]["chunks"]


def test_rename_moves_keyword_hits_without_tokenising(settings, docs):
    (docs / "params.md").rename(docs / "parameters.md")
    summary = ingest_folder(docs, settings).summary
    assert summary is not None
    assert (summary.renamed, summary.chunks_tokenized) == (1, 0)
    with TestClient(create_app(settings)) as client:
        assert sources(retrieve(client, "PN-4471-B", mode="keyword")) == ["parameters.md"]


def test_an_edit_tokenises_only_that_files_new_chunks(settings, docs):
    write(docs / "other.md", OTHER.replace("PN-7702-C", "PN-9000-Z"))
    summary = ingest_folder(docs, settings).summary
    assert summary is not None
    assert summary.updated == 1
    assert summary.chunks_tokenized == 1  # other.md is one chunk; the four other files cost nothing
    with TestClient(create_app(settings)) as client:
        assert sources(retrieve(client, "PN-9000-Z", mode="keyword")) == ["other.md"]
        assert retrieve(client, "PN-7702-C", mode="keyword")["sources"] == []


def test_unchanged_folder_leaves_the_keyword_index_alone(settings, docs):
    pointer = settings.keyword_path / CURRENT
    before = pointer.stat().st_mtime_ns
    summary = ingest_folder(docs, settings).summary
    assert summary is not None
    assert summary.chunks_tokenized == 0
    assert pointer.stat().st_mtime_ns == before


def test_restart_loads_the_index_without_tokenising_and_answers_the_same(settings):
    files = {p: p.stat().st_mtime_ns for p in settings.keyword_path.rglob("*") if p.is_file()}
    questions = ["OLLAMA_NUM_PARALLEL", "会议室最长可以预订几个小时？", "When are the pumps inspected?"]
    runs = []
    for _ in range(2):
        with TestClient(create_app(settings)) as client:
            keywords = client.app.state.pipeline.keywords
            assert keywords.tokenizer.calls == 0  # loading read tokens' index from disk, tokenised nothing
            runs.append([retrieve(client, q) for q in questions])
            assert keywords.tokenizer.calls == len(questions)  # one per question, nothing else
    assert runs[0] == runs[1]
    assert {p: p.stat().st_mtime_ns for p in settings.keyword_path.rglob("*") if p.is_file()} == files


# -- a missing or damaged index ----------------------------------------------------------------------------


def _remove(path: Path) -> None:
    shutil.rmtree(path)


def _garble_pointer(path: Path) -> None:
    (path / CURRENT).write_text("{not json", encoding="utf-8")


def _garble_matrix(path: Path) -> None:
    pointer = json.loads((path / CURRENT).read_text(encoding="utf-8"))
    (path / pointer["dir"] / "data.csc.index.npy").write_bytes(b"\x00garbage" * 10)


@pytest.mark.parametrize(
    ("damage", "state"), [(_remove, "missing"), (_garble_pointer, "corrupt"), (_garble_matrix, "corrupt")]
)
def test_damaged_index_answers_in_vector_mode_and_health_says_how_to_fix(
    tmp_path, settings, docs, fast_engine, damage, state
):
    damage(settings.keyword_path)
    with TestClient(create_app(settings)) as client:
        health = client.get("/health")
        body = retrieve(client, "OLLAMA_NUM_PARALLEL")
        asked = client.post("/ask", json={"question": "OLLAMA_NUM_PARALLEL", "mode": "keyword"}).json()
    assert health.status_code == 200
    kw = health.json()["keyword"]
    assert (kw["status"], kw["mode"]) == (state, "vector")
    assert REINDEX_HINT in kw["message"]
    assert "vector mode" in kw["message"]
    assert body["mode"] == "vector"
    assert body["sources"]
    assert asked["mode"] == "vector"
    assert asked["sources"]

    result = rag(tmp_path, fast_engine, "ingest", str(docs), "--reindex-keywords")
    assert result.returncode == 0, result.stderr
    with TestClient(create_app(settings)) as client:
        kw = client.get("/health").json()["keyword"]
        assert (kw["status"], kw["mode"], kw["chunks"]) == ("ok", "hybrid", 5)
        assert sources(retrieve(client, "OLLAMA_NUM_PARALLEL", mode="keyword")) == ["params.md"]


def test_plain_ingest_repairs_a_damaged_matrix_from_stored_tokens(settings, docs):
    _garble_matrix(settings.keyword_path)
    summary = ingest_folder(docs, settings).summary
    assert summary is not None
    assert summary.chunks_tokenized == 0
    with TestClient(create_app(settings)) as client:
        assert client.get("/health").json()["keyword"]["status"] == "ok"


def test_rebuild_rebuilds_both_indexes(settings, docs):
    summary = ingest_folder(docs, settings, rebuild=True).summary
    assert summary is not None
    assert summary.chunks_tokenized == summary.chunks_written == 5
    with TestClient(create_app(settings)) as client:
        assert sources(retrieve(client, "PN-4471-B", mode="keyword")) == ["params.md"]


def test_vector_mode_setting_is_reported(settings):
    with TestClient(create_app(settings.model_copy(update={"retrieval_mode": "vector"}))) as client:
        kw = client.get("/health").json()["keyword"]
        body = retrieve(client, "OLLAMA_NUM_PARALLEL")
    assert (kw["status"], kw["mode"]) == ("ok", "vector")
    assert body["mode"] == "vector"
