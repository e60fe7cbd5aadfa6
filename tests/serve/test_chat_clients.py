"""The official `openai` and `ollama` Python clients against a real `rag serve` on the bundled models, as
users of Open WebUI, Continue or an SDK script reach it."""

from __future__ import annotations

import ollama
import openai
import pytest

pytestmark = pytest.mark.slow

FIRST = "When does the nightly snapshot of storage/ run?"
HANDBOOK = "en/operations-handbook.pdf"


@pytest.fixture
def service(docs_service: str) -> str:
    return docs_service


@pytest.fixture
def oai(service: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{service}/v1", api_key="not-needed-on-loopback", timeout=300, max_retries=0)


def test_openai_lists_the_model_and_answers_with_sources(oai):
    assert [m.id for m in oai.models.list()] == ["rag"]
    reply = oai.chat.completions.create(model="rag", messages=[{"role": "user", "content": FIRST}])
    content = reply.choices[0].message.content or ""
    assert "02:30" in content
    assert f"\n\nSources:\n[1] {HANDBOOK}, p. 2" in content
    assert reply.usage is not None
    assert reply.usage.completion_tokens > 0
    assert (reply.model_extra or {})["sources"][0]["source"] == HANDBOOK


def test_openai_streamed_gives_the_same_kind_of_answer(oai):
    stream = oai.chat.completions.create(model="rag", messages=[{"role": "user", "content": FIRST}], stream=True)
    chunks = list(stream)
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "02:30" in content
    assert "\n\nSources:\n[1] " in content
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_openai_two_turns_search_the_follow_up_with_the_conversation(oai):
    messages = [{"role": "user", "content": FIRST}]
    first = oai.chat.completions.create(model="rag", messages=messages)  # type: ignore[arg-type]
    messages += [{"role": "assistant", "content": first.choices[0].message.content or ""},
                 {"role": "user", "content": "Where is that written?"}]
    follow = oai.chat.completions.create(model="rag", messages=messages)  # type: ignore[arg-type]
    extra = follow.model_extra or {}
    assert "snapshot" in extra["standalone_question"].lower()
    assert HANDBOOK in [s["source"] for s in extra["sources"]]


def test_openai_unknown_model_and_bad_request_raise_the_matching_errors(oai):
    with pytest.raises(openai.NotFoundError, match="gpt-4o"):
        oai.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": FIRST}])
    with pytest.raises(openai.UnprocessableEntityError, match="last message"):
        oai.chat.completions.create(model="rag", messages=[{"role": "assistant", "content": "hello"}])


def test_ollama_client_lists_chats_streamed_and_not_and_follows_up(service):
    client = ollama.Client(host=service, timeout=300)
    assert [m.model for m in client.list().models] == ["rag:latest"]
    reply = client.chat(model="rag", messages=[{"role": "user", "content": FIRST}])
    assert "02:30" in (reply.message.content or "")
    streamed = "".join(part.message.content or "" for part in client.chat(
        model="rag:latest", messages=[{"role": "user", "content": FIRST}], stream=True,
    ))
    assert "02:30" in streamed
    assert f"[1] {HANDBOOK}" in streamed
    follow = client.chat(model="rag", messages=[
        {"role": "user", "content": FIRST},
        {"role": "assistant", "content": reply.message.content or ""},
        {"role": "user", "content": "Where is that written?"},
    ])
    # The client keeps only Ollama's own fields, so the sources are read where its users see them.
    assert HANDBOOK in (follow.message.content or "").split("\n\nSources:\n")[1]


def test_ollama_client_cannot_manage_models_through_the_service(service):
    client = ollama.Client(host=service, timeout=30)
    with pytest.raises(ollama.ResponseError) as pulled:
        client.pull("smollm2:135m")
    assert pulled.value.status_code == 404
    with pytest.raises(ollama.ResponseError) as deleted:
        client.delete("smollm2:135m")
    assert deleted.value.status_code == 404
    with pytest.raises(ollama.ResponseError) as unknown:
        client.chat(model="llama3", messages=[{"role": "user", "content": FIRST}])
    assert unknown.value.status_code == 404
