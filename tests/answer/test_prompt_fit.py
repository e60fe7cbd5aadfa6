"""The prompt fits the real chat model's context: the token estimate errs high against SmolLM2's own
tokenizer, and a question over many Chinese chunks leaves sources out instead of being cut by the model."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from ingest.loaders import LoadLimits, load
from ingest.run import ingest_folder
from rag.answer.prompts import estimate_tokens
from rag.config import Settings
from rag.serve.app import create_app
from tests.support.helpers import make_settings

pytestmark = pytest.mark.slow

DOCS = Path(__file__).resolve().parents[2] / "data" / "docs"


def test_the_token_estimate_errs_high_against_the_chat_models_tokenizer():
    llama_cpp = pytest.importorskip("llama_cpp")
    from rag.engine.catalog import CATALOG, artifact_path

    spec = next(s for s in CATALOG.values() if s.kind == "chat")
    vocab = llama_cpp.Llama(model_path=str(artifact_path(spec)), vocab_only=True, verbose=False)
    pages = [p for f in sorted(DOCS.rglob("*.*")) for p in load(f, DOCS, LoadLimits()).pages]
    assert len(pages) == 13
    for page in pages:
        real = len(vocab.tokenize(page.text.encode(), add_bos=False, special=False))
        assert real < estimate_tokens(page.text) < real * 1.7, page.text[:60]


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory, real_engine: str) -> Settings:
    settings = make_settings(tmp_path_factory.mktemp("fit"), real_engine, temperature=0.0)
    ingest_folder(DOCS, settings)
    return settings


def ask(settings: Settings, question: str, **extra: object) -> dict:
    with TestClient(create_app(settings)) as client:
        r = client.post("/ask", json={"question": question, **extra})
    assert r.status_code == 200, r.text
    return r.json()


@pytest.mark.parametrize("question", ["storage/ 目录可以放在网络共享盘上吗？", "What port does rag serve listen on?"])
def test_default_settings_fit_the_context(settings, question):
    body = ask(settings, question)
    assert len(body["sources"]) == 4
    assert body["warnings"] == []


def test_many_chinese_sources_are_left_out_rather_than_cut(settings):
    body = ask(settings, "storage/ 目录可以放在网络共享盘上吗？", top_k=12)
    assert [w["code"] for w in body["warnings"]] == ["sources_left_out"]
    assert 4 <= len(body["sources"]) < 12


def test_a_question_too_long_for_the_context_is_reported_as_cut(settings):
    question = "storage/ 目录可以放在网络共享盘上吗？" + "请详细回答。" * 300  # about 3,000 tokens alone
    body = ask(settings.model_copy(update={"num_ctx": 2048}), question)
    assert "prompt_truncated" in [w["code"] for w in body["warnings"]]
