"""The real bundled models behind the engine, driven by the official ollama client and LlamaIndex."""

from __future__ import annotations

import json

import httpx
import numpy as np
import ollama
import pytest
from llama_index.core.llms import ChatMessage
from llama_index.embeddings.ollama import OllamaEmbedding
from llama_index.llms.ollama import Ollama

pytestmark = pytest.mark.slow

CHAT, EMBED = "smollm2:135m", "all-minilm"
GREEDY = {"temperature": 0, "seed": 7, "num_predict": 48}


@pytest.fixture
def client(real_engine: str) -> ollama.Client:
    return ollama.Client(host=real_engine, timeout=300)


def ask(client: ollama.Client, text: str, **options: object) -> ollama.ChatResponse:
    return client.chat(model=CHAT, messages=[{"role": "user", "content": text}], options={**GREEDY, **options})


def test_chat_answers_with_real_counters(client):
    r = ask(client, "What is the capital of France? Answer in one word.")
    assert r.message.content.strip()
    assert "paris" in r.message.content.lower()
    assert r.prompt_eval_count > 10
    assert 0 < r.eval_count <= 48
    assert r.eval_duration > 0
    assert r.prompt_eval_duration > 0
    assert r.total_duration >= r.eval_duration + r.prompt_eval_duration


def test_streamed_chat_matches_the_non_streamed_answer(client):
    whole = ask(client, "Name three colours.")
    parts = list(
        client.chat(
            model=CHAT,
            messages=[{"role": "user", "content": "Name three colours."}],
            options=GREEDY,
            stream=True,
        )
    )
    assert len(parts) > 2
    assert parts[-1].done
    assert "".join(p.message.content for p in parts) == whole.message.content
    assert parts[-1].eval_count == whole.eval_count


def test_generate_streams_and_honours_num_predict(client):
    parts = list(
        client.generate(
            model=CHAT,
            prompt="Write a long story about a dragon.",
            options={**GREEDY, "num_predict": 12},
            stream=True,
        )
    )
    final = parts[-1]
    assert final.done
    assert final.done_reason == "length"
    assert final.eval_count == 12


@pytest.mark.parametrize("limit", [1, 5, 20])
def test_num_predict_bounds_eval_count(client, limit):
    r = ask(client, "Tell me everything you know about the history of Rome.", num_predict=limit)
    assert r.eval_count == limit
    assert r.done_reason == "length"


def test_seed_and_temperature_zero_repeat_exactly(client):
    first = ask(client, "Invent a name for a cat.")
    second = ask(client, "Invent a name for a cat.")
    assert first.message.content == second.message.content


def test_same_seed_repeats_when_sampling(client):
    options = {"temperature": 1.0, "seed": 1234, "num_predict": 32}
    runs = [ask(client, "Write a short poem about rain.", **options).message.content for _ in range(2)]
    other = ask(client, "Write a short poem about rain.", **{**options, "seed": 99}).message.content
    assert runs[0] == runs[1]
    assert other != runs[0]


def test_json_schema_is_obeyed(client):
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "age": {"type": "integer"},
            "pets": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
        },
        "required": ["name", "age", "pets"],
    }
    r = client.chat(
        model=CHAT,
        messages=[{"role": "user", "content": "Describe a person called Ann, 31, with a dog."}],
        format=schema,
        options={**GREEDY, "num_predict": 128},
    )
    value = json.loads(r.message.content)
    assert set(value) >= {"name", "age", "pets"}
    assert isinstance(value["name"], str)
    assert isinstance(value["age"], int)
    assert all(isinstance(p, str) for p in value["pets"])
    assert len(value["pets"]) <= 3
    assert value["age"] == 31


def test_format_json_returns_an_object(client):
    r = client.generate(
        model=CHAT,
        prompt="Give a JSON object with a key colour.",
        format="json",
        options={**GREEDY, "num_predict": 64},
    )
    assert isinstance(json.loads(r.response), dict)


def test_schema_too_long_for_num_predict_is_an_error(client):
    schema = {
        "type": "object",
        "properties": {"story": {"type": "string", "minLength": 200}},
        "required": ["story"],
    }
    with pytest.raises(ollama.ResponseError, match="num_predict"):
        client.chat(
            model=CHAT,
            messages=[{"role": "user", "content": "Tell a story"}],
            format=schema,
            options={**GREEDY, "num_predict": 8},
        )


def test_embeddings_are_384_dims_unit_norm_and_meaningful(client):
    texts = [
        "The cat is sleeping on the sofa.",
        "A kitten naps on the couch.",
        "Quarterly revenue increased by ten percent.",
    ]
    r = client.embed(model=EMBED, input=texts)
    v = np.array(r.embeddings)
    assert v.shape == (3, 384)
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-4)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.3
    assert r.prompt_eval_count > 3 * 5


def test_embeddings_match_sentence_transformers_in_process(client):
    from sentence_transformers import SentenceTransformer

    from rag.engine.catalog import ALL_MINILM, artifact_path

    texts = ["offline question answering", "数据中心的备份每天凌晨两点开始。"]
    local = SentenceTransformer(str(artifact_path(ALL_MINILM)), device="cpu", local_files_only=True)
    expected = local.encode(texts, normalize_embeddings=True)
    served = np.array(client.embed(model=EMBED, input=texts).embeddings)
    # The engine runs all-minilm on ONNX int8 by default: the same model within cosine 0.99, not bit for bit
    # (tests/engine/test_onnx_embedder.py checks 1,000 texts; RAG_ENGINE_EMBED_RUNTIME=torch is exact).
    assert served.shape == expected.shape
    cosines = (served * expected).sum(axis=1) / np.linalg.norm(served, axis=1) / np.linalg.norm(expected, axis=1)
    assert cosines.min() >= 0.99


def test_truncation_at_256_tokens(client):
    long_text = "retrieval augmented generation " * 200
    r = client.embed(model=EMBED, input=[long_text])
    assert r.prompt_eval_count == 256
    with pytest.raises(ollama.ResponseError, match="exceeds the context length") as err:
        client.embed(model=EMBED, input=[long_text], truncate=False)
    assert err.value.status_code == 400


def test_list_show_ps_version_pull(client, real_engine):
    sizes = {m.model: m.size for m in client.list().models}
    assert sizes["smollm2:135m"] > 50_000_000
    assert sizes["all-minilm:latest"] > 50_000_000
    shown = client.show(CHAT)
    assert shown.modelinfo["llama.context_length"] == 8192
    assert "<|im_start|>" in shown.template
    assert shown.modelinfo["engine.backend"] == "real"
    client.embed(model=EMBED, input="warm")
    assert "all-minilm:latest" in {m.model for m in client.ps().models}
    assert httpx.get(f"{real_engine}/api/version").json()["version"]
    assert client.pull(CHAT).status == "success"
    with pytest.raises(ollama.ResponseError):
        client.pull("mistral")


def test_context_length_matches_the_gguf():
    from llama_cpp import Llama

    from rag.engine.catalog import SMOLLM2, artifact_path

    meta = Llama(str(artifact_path(SMOLLM2)), vocab_only=True, verbose=False).metadata
    assert int(meta["llama.context_length"]) == SMOLLM2.context_length
    assert int(meta["llama.embedding_length"]) == SMOLLM2.embedding_length


def test_llamaindex_llm_complete_chat_and_stream(real_engine):
    llm = Ollama(
        model=CHAT,
        base_url=real_engine,
        request_timeout=300,
        temperature=0,
        additional_kwargs={"seed": 7, "num_predict": 40},
    )
    assert llm.metadata.context_window == 8192  # read from /api/show
    assert "paris" in llm.complete("What is the capital of France? One word.").text.lower()
    reply = llm.chat(
        [ChatMessage(role="system", content="You are terse."), ChatMessage(role="user", content="Say hello.")]
    )
    assert reply.message.content.strip()
    deltas = [r.delta for r in llm.stream_chat([ChatMessage(role="user", content="Say hello.")])]
    assert len(deltas) > 1
    assert "".join(d or "" for d in deltas).strip()


def test_llamaindex_embedding_batch(real_engine):
    embed = OllamaEmbedding(model_name=EMBED, base_url=real_engine, embed_batch_size=16)
    texts = [f"sentence number {i} about databases" for i in range(40)]
    vectors = np.array(embed.get_text_embedding_batch(texts))
    assert vectors.shape == (40, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    query = np.array(embed.get_query_embedding("sentence number 3 about databases"))
    assert int(np.argmax(vectors @ query)) == 3
