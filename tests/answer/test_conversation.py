"""Follow-up questions: made standalone before retrieval, the history cut to fit, a first question never
rewritten. The two-turn exchange runs on the real bundled models over data/docs."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from ingest.run import ingest_folder
from rag.answer.conversation import accept, clean, conversation, split
from rag.answer.models import Message
from rag.errors import BadRequest
from rag.index.tokens import Tokenizer
from rag.serve.app import create_app
from tests.support.helpers import ENGLISH, engine_requests, make_settings, write

DOCS = Path(__file__).resolve().parents[2] / "data" / "docs"
FIRST = "When does the nightly snapshot of storage/ run?"


def turns(*pairs: tuple[str, str]) -> list[Message]:
    return [Message(role=role, content=text) for role, text in pairs]  # type: ignore[arg-type]


HISTORY = turns(("user", FIRST), ("assistant", "The nightly snapshot of storage/ runs at 02:30 [1]."))


@pytest.mark.parametrize(("rewrite", "kept"), [
    ("Where is the nightly snapshot of storage written?", True),
    ("The nightly snapshot of storage/ runs at 02:30 [1]", False),  # a copy of the answer, not a question
    ("Where is the nightly snapshot?", False),  # lost "written": no longer what was asked
    ("Where is that written in the Kubernetes Helm chart values file?", False),  # mostly invented
    ("", False),
])
def test_a_rewrite_is_kept_only_when_it_still_asks_what_was_asked(rewrite, kept):
    conv = conversation("Where is that written?", HISTORY, make_settings(Path("/tmp"), "http://x"), "en")
    assert accept(clean(rewrite), conv, Tokenizer()) is kept


def test_clean_takes_the_first_line_without_an_echoed_label():
    assert clean('Standalone question: "Where is it written?"\nAnswer: ...') == "Where is it written?"
    assert clean("\n  问题：快照在哪里？\n") == "快照在哪里？"


def test_split_takes_the_last_user_turn_and_refuses_anything_else():
    question, history = split(turns(("system", "be brief"), *[(m.role, m.text) for m in HISTORY], ("user", "Why?")))
    assert question == "Why?"
    assert len(history) == 3
    with pytest.raises(BadRequest, match="last message must be the user's"):
        split(turns(("user", "hi"), ("assistant", "hello")))
    with pytest.raises(BadRequest, match=r"messages\[0\].content"):
        split(turns(("user", "\u3000 ")))


def test_history_keeps_the_newest_turns_that_fit_and_drops_sources_blocks(tmp_path):
    settings = make_settings(tmp_path, "http://x", num_ctx=512, num_predict=64)
    old = [("user", f"old question {i} " + "word " * 60) for i in range(10)]
    answered = ("assistant", "It runs at 02:30 [1].\n\nSources:\n[1] en/operations-handbook.pdf, p. 2")
    conv = conversation("And then?", turns(*old, ("user", FIRST), answered), settings, "en")
    assert conv.dropped > 0
    assert [m.text for m in conv.history][-2:] == [FIRST, "It runs at 02:30 [1]."]


@pytest.fixture
def fast_settings(tmp_path: Path, fast_engine: str):
    root = tmp_path / "docs"
    write(root / "cooling.md", "# Cooling\n\n" + ENGLISH * 2)
    settings = make_settings(tmp_path, fast_engine)
    ingest_folder(root, settings)
    return settings


def test_a_first_question_costs_one_chat_call_and_a_follow_up_two(fast_settings):
    url = fast_settings.ollama_url
    with TestClient(create_app(fast_settings)) as client:
        before = engine_requests(url, "/api/chat")
        first = client.post("/ask", json={"messages": [{"role": "user", "content": "When are pumps inspected?"}]})
        middle = engine_requests(url, "/api/chat")
        follow = client.post("/ask", json={"messages": [
            {"role": "user", "content": "When are pumps inspected?"},
            {"role": "assistant", "content": first.json()["answer"]},
            {"role": "user", "content": "Who logs it?"},
        ]})
        after = engine_requests(url, "/api/chat")
    assert first.status_code == follow.status_code == 200, follow.text
    assert (middle - before, after - middle) == (1, 2)
    assert "standalone_question" not in first.json() or first.json()["standalone_question"] is None
    standalone = follow.json()["standalone_question"]
    assert "Who logs it?" in standalone  # the echoing stand-in model's rewrite is refused: the fallback is used
    assert "pumps" in standalone
    assert "condense" in follow.json()["timings_ms"]


def test_a_long_history_is_cut_and_that_is_said(fast_settings):
    settings = fast_settings.model_copy(update={"num_ctx": 512, "num_predict": 64})
    history = [{"role": "user", "content": f"question {i} " + "filler " * 80} for i in range(8)]
    with TestClient(create_app(settings)) as client:
        r = client.post("/ask", json={"messages": [*history, {"role": "user", "content": "And the pumps?"}]})
    assert r.status_code == 200, r.text
    warning = next(w for w in r.json()["warnings"] if w["code"] == "history_cut")
    assert "newest turns were kept" in warning["message"]
    assert r.json()["standalone_question"].startswith("question 7")


def test_ask_needs_a_question_or_messages(fast_settings):
    with TestClient(create_app(fast_settings)) as client:
        r = client.post("/ask", json={"top_k": 2})
    assert r.status_code == 422
    assert "messages" in r.json()["error"]["message"]


@pytest.mark.slow
def test_where_is_that_written_finds_the_handbook_on_the_bundled_models(tmp_path, real_engine):
    settings = make_settings(tmp_path, real_engine, temperature=0.0)
    ingest_folder(DOCS, settings)
    with TestClient(create_app(settings)) as client:
        first = client.post("/ask", json={"question": FIRST}).json()
        follow = client.post("/ask", json={"messages": [
            {"role": "user", "content": FIRST},
            {"role": "assistant", "content": first["answer"]},
            {"role": "user", "content": "Where is that written?"},
        ]}).json()
    assert "02:30" in first["answer"]
    assert "snapshot" in follow["standalone_question"].lower()
    assert "en/operations-handbook.pdf" in [s["source"] for s in follow["sources"]]
