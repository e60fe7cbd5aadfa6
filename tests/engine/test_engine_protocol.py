"""Ollama protocol conformance on the deterministic backend, through the official client and raw HTTP."""

from __future__ import annotations

import json
import time

import httpx
import numpy as np
import ollama
import pytest


@pytest.fixture
def client(fast_engine: str) -> ollama.Client:
    return ollama.Client(host=fast_engine, timeout=30)


def stats(url: str) -> dict:
    return httpx.get(f"{url}/engine/stats", timeout=10).json()


def test_root_head_and_version(fast_engine, client):
    assert httpx.get(f"{fast_engine}/").text == "Ollama is running"
    assert httpx.head(f"{fast_engine}/").status_code == 200
    assert client._client.get("/api/version").json()["version"].startswith("0.")


def test_list_names_both_bundled_models_with_details(client):
    models = {m.model: m for m in client.list().models}
    assert set(models) == {"smollm2:135m", "all-minilm:latest"}
    assert models["smollm2:135m"].details.quantization_level == "Q4_1"
    assert models["all-minilm:latest"].details.family == "bert"
    assert all(len(m.digest) == 64 for m in models.values())


def test_show_reports_context_length_and_capabilities(client):
    chat, embed = client.show("smollm2:135m"), client.show("all-minilm")
    assert chat.capabilities == ["completion"]
    assert chat.modelinfo["llama.context_length"] == 8192
    assert embed.capabilities == ["embedding"]
    assert embed.modelinfo["bert.context_length"] == 256
    assert embed.modelinfo["bert.embedding_length"] == 384
    assert chat.modelinfo["engine.backend"] == "deterministic"
    assert "<|im_start|>" in chat.template


def test_chat_non_streamed_has_counters(client):
    r = client.chat(model="smollm2:135m", messages=[{"role": "user", "content": "ping pong"}], stream=False)
    assert r.message.role == "assistant"
    assert r.message.content == "You said: ping pong"
    assert r.done
    assert r.done_reason == "stop"
    assert r.eval_count == 4
    assert r.prompt_eval_count > 0
    assert r.total_duration > 0
    assert r.eval_duration > 0


def test_chat_streams_ndjson_lines_ending_with_done(fast_engine):
    body = {"model": "smollm2:135m", "messages": [{"role": "user", "content": "one two three"}]}
    with httpx.stream("POST", f"{fast_engine}/api/chat", json=body, timeout=30) as r:
        assert r.headers["content-type"].startswith("application/x-ndjson")
        lines = [json.loads(line) for line in r.iter_lines() if line]
    assert [line["done"] for line in lines] == [False] * (len(lines) - 1) + [True]
    assert "".join(line["message"]["content"] for line in lines) == "You said: one two three"
    assert lines[-1]["done_reason"] == "stop"
    assert {"total_duration", "load_duration", "prompt_eval_count", "eval_count", "eval_duration"} <= set(lines[-1])


def test_streamed_chat_through_the_client(client):
    parts = list(client.chat(model="smollm2:135m", messages=[{"role": "user", "content": "a b"}], stream=True))
    assert "".join(p.message.content for p in parts) == "You said: a b"
    assert parts[-1].done
    assert parts[-1].eval_count == 4


def test_generate_with_system_and_stream(client):
    r = client.generate(model="smollm2:135m", prompt="hello", system="be brief", stream=False)
    assert r.response == "You said: hello"
    parts = list(client.generate(model="smollm2:135m", prompt="x y z", stream=True))
    assert "".join(p.response for p in parts) == "You said: x y z"


def test_num_predict_and_stop_are_honoured(client):
    r = client.chat(
        model="smollm2:135m",
        messages=[{"role": "user", "content": "a b c d e f"}],
        options={"num_predict": 3},
    )
    assert (r.eval_count, r.done_reason, r.message.content) == (3, "length", "You said: a")
    r = client.generate(model="smollm2:135m", prompt="red green blue", options={"stop": [" blue"]})
    assert (r.response, r.done_reason) == ("You said: red green", "stop")


def test_format_json_and_schema_return_valid_json(client):
    r = client.generate(model="smollm2:135m", prompt="hello", format="json")
    assert json.loads(r.response) == {"response": "hello"}
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
    }
    r = client.chat(model="smollm2:135m", messages=[{"role": "user", "content": "q"}], format=schema)
    out = json.loads(r.message.content)
    assert isinstance(out["name"], str)
    assert isinstance(out["age"], int)


def test_embed_batch_is_384_dims_unit_norm_and_similarity_ordered(client):
    texts = ["the cat sat on the mat", "a cat sat on a mat", "quarterly revenue grew by ten percent"]
    r = client.embed(model="all-minilm", input=texts)
    vectors = np.array(r.embeddings)
    assert vectors.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]
    assert r.prompt_eval_count == sum(len(t.split()) for t in texts)


def test_untagged_name_means_latest(client):
    a = client.embed(model="all-minilm", input="same text").embeddings
    b = client.embed(model="all-minilm:latest", input="same text").embeddings
    assert a == b


def test_legacy_embeddings_endpoint(client):
    r = client.embeddings(model="all-minilm", prompt="hello world")
    assert len(r.embedding) == 384


def test_embed_dimensions_truncates_and_renormalises(client):
    vec = np.array(client.embed(model="all-minilm", input="hello world", dimensions=64).embeddings[0])
    assert vec.shape == (64,)
    assert abs(np.linalg.norm(vec) - 1) < 1e-5


def test_pull_bundled_model_succeeds_streamed_and_not(client):
    statuses = [p.status for p in client.pull("smollm2:135m", stream=True)]
    assert statuses[0] == "pulling manifest"
    assert statuses[-1] == "success"
    assert client.pull("all-minilm").status == "success"


def test_pull_unknown_model_raises_saying_no_network(client):
    with pytest.raises(ollama.ResponseError) as err:
        client.pull("llama3:8b")
    assert err.value.status_code == 404
    assert "no network" in err.value.error
    assert "bundled" in err.value.error


def test_ps_lists_loaded_models_and_keep_alive_zero_unloads(client, fast_engine):
    client.embed(model="all-minilm", input="load me", keep_alive="10m")
    loaded = {m.model: m for m in client.ps().models}
    assert loaded["all-minilm:latest"].context_length == 256
    r = client.chat(model="smollm2:135m", messages=[], keep_alive=0)
    assert r.done_reason == "unload"
    assert "smollm2:135m" not in {m.model for m in client.ps().models}
    r = client.generate(model="smollm2:135m", prompt="", keep_alive=-1)
    assert r.done_reason == "load"
    forever = next(m for m in client.ps().models if m.model == "smollm2:135m")
    assert forever.expires_at.year == 9999


def test_keep_alive_expiry_unloads_after_the_duration(client):
    client.embed(model="all-minilm", input="short stay", keep_alive="1s")
    assert "all-minilm:latest" in {m.model for m in client.ps().models}
    client.embed(model="all-minilm", input=[], keep_alive=1.0)
    for _ in range(40):
        if "all-minilm:latest" not in {m.model for m in client.ps().models}:
            break
        time.sleep(0.1)
    assert "all-minilm:latest" not in {m.model for m in client.ps().models}


def test_num_ctx_change_reloads_the_model(client):
    client.generate(model="smollm2:135m", prompt="a", options={"num_ctx": 1024})
    r = client.generate(model="smollm2:135m", prompt="a", options={"num_ctx": 4096})
    assert r.load_duration > 0
    same = client.generate(model="smollm2:135m", prompt="a", options={"num_ctx": 4096})
    assert same.load_duration == 0
    assert next(m for m in client.ps().models if m.model == "smollm2:135m").context_length == 4096


def test_stats_count_embed_requests_and_texts(client, fast_engine):
    before = stats(fast_engine)
    client.embed(model="all-minilm", input=["a", "b", "c"])
    client.embed(model="all-minilm", input="d")
    after = stats(fast_engine)
    assert after["requests"]["/api/embed"] - before["requests"].get("/api/embed", 0) == 2
    assert after["embedded_texts"] - before["embedded_texts"] == 4
    assert after["backend"] == "deterministic"
