"""Errors, limits and failures: each answered in Ollama's shape, and the engine keeps serving after it."""

from __future__ import annotations

import json
import signal
import threading
import time

import httpx
import ollama
import pytest

from rag.engine.config import EngineSettings
from tests.support.servers import engine_process, free_port, running_engine

CHAT = "smollm2:135m"
BUSY = "server busy, please try again.  maximum pending requests exceeded"


def post(url: str, path: str, body: object, timeout: float = 30) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(f"{url}{path}", content=content, timeout=timeout)


def assert_serving(url: str) -> None:
    r = post(url, "/api/chat", {"model": CHAT, "messages": [{"role": "user", "content": "ok"}], "stream": False})
    assert r.status_code == 200
    assert r.json()["message"]["content"] == "You said: ok"


def stats(url: str) -> dict:
    return httpx.get(f"{url}/engine/stats", timeout=10).json()


@pytest.mark.parametrize("path", ["/api/chat", "/api/generate", "/api/embed", "/api/show", "/api/pull"])
def test_malformed_json_is_400(fast_engine, path):
    r = post(fast_engine, path, b'{"model": "smollm2:135m", ')
    assert r.status_code == 400
    assert "invalid JSON" in r.json()["error"]
    assert_serving(fast_engine)


def test_missing_body_and_missing_model_are_400(fast_engine):
    assert post(fast_engine, "/api/chat", b"").json() == {"error": "missing request body"}
    r = post(fast_engine, "/api/embed", {"input": "x"})
    assert (r.status_code, r.json()) == (400, {"error": "model is required"})
    assert_serving(fast_engine)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/chat", {"model": "qwen2.5:7b", "messages": [{"role": "user", "content": "hi"}]}),
        ("/api/generate", {"model": "qwen2.5:7b", "prompt": "hi"}),
        ("/api/embed", {"model": "qwen2.5:7b", "input": "hi"}),
        ("/api/show", {"model": "qwen2.5:7b"}),
    ],
)
def test_unknown_model_is_404_in_ollamas_words(fast_engine, path, body):
    r = post(fast_engine, path, body)
    assert r.status_code == 404
    assert r.json() == {"error": 'model "qwen2.5:7b" not found, try pulling it first'}
    assert_serving(fast_engine)


def test_unknown_model_raises_response_error_in_the_client(fast_engine):
    with pytest.raises(ollama.ResponseError) as err:
        ollama.Client(host=fast_engine).chat(model="nope", messages=[{"role": "user", "content": "x"}])
    assert err.value.status_code == 404


def test_empty_input_list_returns_no_embeddings_like_ollama(fast_engine):
    r = post(fast_engine, "/api/embed", {"model": "all-minilm", "input": []})
    assert r.status_code == 200
    assert r.json()["embeddings"] == []


@pytest.mark.parametrize("value", [[1, 2], ["ok", None], {"text": "x"}, 3])
def test_non_string_input_is_400(fast_engine, value):
    r = post(fast_engine, "/api/embed", {"model": "all-minilm", "input": value})
    assert r.status_code == 400
    assert "invalid input type" in r.json()["error"]
    assert_serving(fast_engine)


def test_num_ctx_above_training_context_is_400(fast_engine):
    body = {"model": CHAT, "prompt": "hi", "stream": False, "options": {"num_ctx": 100_000}}
    r = post(fast_engine, "/api/generate", body)
    assert r.status_code == 400
    assert "exceeds the context length" in r.json()["error"]
    assert_serving(fast_engine)


def test_over_long_input_truncate_false_is_400_true_is_cut(fast_engine):
    long_text = "word " * 300
    r = post(fast_engine, "/api/embed", {"model": "all-minilm", "input": [long_text], "truncate": False})
    assert (r.status_code, r.json()) == (400, {"error": "the input length exceeds the context length"})
    r = post(fast_engine, "/api/embed", {"model": "all-minilm", "input": [long_text, "short"]})
    assert r.status_code == 200
    assert r.json()["prompt_eval_count"] == 256 + 1
    assert_serving(fast_engine)


def test_schema_that_cannot_finish_within_num_predict_is_an_error(fast_engine):
    schema = {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "integer"}}}
    body = {
        "model": CHAT,
        "messages": [{"role": "user", "content": "one two three four"}],
        "format": schema,
        "options": {"num_predict": 2},
        "stream": False,
    }
    r = post(fast_engine, "/api/chat", body)
    assert r.status_code == 500
    assert "num_predict (2)" in r.json()["error"]
    with pytest.raises(ollama.ResponseError, match="num_predict"):
        list(ollama.Client(host=fast_engine).chat(**{**body, "stream": True}))
    assert_serving(fast_engine)


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"model": CHAT, "messages": [], "keep_alive": "soon"}, "keep_alive"),
        (
            {"model": CHAT, "messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]},
            "tools",
        ),
        ({"model": CHAT, "messages": [{"role": "user", "content": "x"}], "think": True}, "thinking"),
        ({"model": "all-minilm", "messages": [{"role": "user", "content": "x"}]}, "does not support"),
        ({"model": CHAT, "messages": [{"role": "user", "content": "x"}], "format": "yaml"}, "format"),
        (
            {
                "model": CHAT,
                "messages": [{"role": "user", "content": "x"}],
                "options": {"temperature": "hot"},
            },
            "temperature",
        ),
    ],
)
def test_bad_chat_requests_are_400(fast_engine, body, words):
    r = post(fast_engine, "/api/chat", body)
    assert r.status_code == 400
    assert words in r.json()["error"]
    assert_serving(fast_engine)


def test_unknown_route_is_404_with_error_field(fast_engine):
    r = httpx.get(f"{fast_engine}/api/nothing")
    assert r.status_code == 404
    assert "error" in r.json()


@pytest.fixture(scope="module")
def slow_engine():
    """One request at a time, a queue of one, 20 ms per generated token."""
    with running_engine(
        "deterministic", OLLAMA_NUM_PARALLEL="1", OLLAMA_MAX_QUEUE="1", RAG_ENGINE_TOKEN_DELAY="0.02"
    ) as url:
        yield url


def long_chat(words: int = 200, stream: bool = False) -> dict:
    text = " ".join(f"w{i}" for i in range(words))
    return {"model": CHAT, "messages": [{"role": "user", "content": text}], "stream": stream}


def test_a_full_queue_answers_503_and_the_engine_recovers(slow_engine):
    body = {**long_chat(), "options": {"num_predict": 40}}  # ~0.8 s each
    assert_serving(slow_engine)  # loaded first: a request waiting for its runner to start counts as queued
    results: list[httpx.Response] = []

    def fire() -> None:
        results.append(post(slow_engine, "/api/chat", body))

    threads = [threading.Thread(target=fire) for _ in range(4)]
    for t in threads:
        t.start()
        time.sleep(0.05)
    for t in threads:
        t.join()
    codes = sorted(r.status_code for r in results)
    assert codes == [200, 200, 503, 503]  # one running, one queued, the rest turned away
    assert {r.json()["error"] for r in results if r.status_code == 503} == {BUSY}
    assert stats(slow_engine)["rejected"] >= 2
    assert_serving(slow_engine)


def test_disconnect_mid_stream_stops_generation(slow_engine):
    before = stats(slow_engine)
    with httpx.stream("POST", f"{slow_engine}/api/chat", json=long_chat(500, stream=True), timeout=30) as r:
        lines = r.iter_lines()
        for _ in range(5):
            assert json.loads(next(lines))["done"] is False
    # 500 tokens would take 10 s; the engine must notice the closed connection and stop.
    time.sleep(1.0)
    after = stats(slow_engine)
    assert after["cancelled"] == before["cancelled"] + 1
    assert after["generated_tokens"] - before["generated_tokens"] < 100
    started = time.monotonic()
    assert_serving(slow_engine)  # the slot was freed: no waiting behind the abandoned generation
    assert time.monotonic() - started < 2


def test_disconnect_while_waiting_for_a_non_streamed_answer_stops_generation(slow_engine):
    before = stats(slow_engine)
    with pytest.raises(httpx.ReadTimeout):
        post(slow_engine, "/api/chat", long_chat(500), timeout=0.5)
    time.sleep(1.5)
    after = stats(slow_engine)
    assert after["cancelled"] == before["cancelled"] + 1
    assert after["generated_tokens"] - before["generated_tokens"] < 150


def test_parallel_slots_run_requests_at_the_same_time():
    body = {**long_chat(), "options": {"num_predict": 25}}  # 0.5 s each
    with running_engine("deterministic", OLLAMA_NUM_PARALLEL="2", RAG_ENGINE_TOKEN_DELAY="0.02") as url:
        post(url, "/api/chat", {**body, "options": {"num_predict": 1}})  # load first
        started = time.monotonic()
        threads = [threading.Thread(target=post, args=(url, "/api/chat", body)) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert time.monotonic() - started < 0.9  # two at once, not 1.0 s one after the other


def test_ctrl_c_ends_open_streams_with_an_error_line_and_exits_promptly():
    with engine_process("deterministic", RAG_ENGINE_TOKEN_DELAY="0.05") as (url, proc):
        with httpx.stream("POST", f"{url}/api/chat", json=long_chat(500, stream=True), timeout=30) as r:
            lines = r.iter_lines()
            assert json.loads(next(lines))["done"] is False
            proc.send_signal(signal.SIGINT)
            started = time.monotonic()
            rest = [json.loads(line) for line in lines if line]
        assert rest[-1] == {"error": "generation cancelled: the engine is shutting down"}
        assert proc.wait(timeout=10) in (0, -signal.SIGINT)  # uvicorn re-raises the signal once shut down
        assert time.monotonic() - started < 4  # not the 25 s the answer would take


@pytest.mark.parametrize("form", ["127.0.0.1:{port}", "http://127.0.0.1:{port}"])
def test_engine_binds_where_ollama_host_says(form):
    port = free_port()
    with running_engine("deterministic", OLLAMA_HOST=form.format(port=port)) as url:
        assert url == f"http://127.0.0.1:{port}"
        assert httpx.get(f"http://127.0.0.1:{port}/").text == "Ollama is running"


def test_settings_follow_ollamas_variables(monkeypatch):
    monkeypatch.setenv("OLLAMA_HOST", "0.0.0.0")
    monkeypatch.setenv("OLLAMA_NUM_PARALLEL", "3")
    monkeypatch.setenv("OLLAMA_MAX_QUEUE", "7")
    settings = EngineSettings(_env_file=None)  # type: ignore[call-arg]
    assert settings.bind == ("0.0.0.0", 11434)
    assert (settings.num_parallel, settings.max_queue, settings.backend) == (3, 7, "real")
    monkeypatch.setenv("OLLAMA_HOST", "http://example.test")
    assert EngineSettings(_env_file=None).bind == ("example.test", 80)  # type: ignore[call-arg]


def test_a_request_for_a_foreign_host_name_is_refused_as_dns_rebinding(fast_engine):
    r = httpx.get(f"{fast_engine}/api/version", headers={"Host": "attacker.example:11434"})
    assert r.status_code == 403
    assert "attacker.example" in r.json()["error"]
    for host in ("localhost:11434", "127.0.0.1", "[::1]:11434"):
        assert httpx.get(f"{fast_engine}/api/version", headers={"Host": host}).status_code == 200


def test_allowed_hosts_admit_a_name():
    with running_engine("deterministic", RAG_ENGINE_ALLOWED_HOSTS="ollama.lan, *.corp") as url:
        for host in ("ollama.lan", "gpu1.corp:11434"):
            assert httpx.get(f"{url}/api/version", headers={"Host": host}).status_code == 200
        assert httpx.get(f"{url}/api/version", headers={"Host": "other.example"}).status_code == 403


def test_junk_paths_share_one_counter(fast_engine):
    for i in range(50):
        httpx.get(f"{fast_engine}/junk/{i}")
    counted = stats(fast_engine)["requests"]
    assert not any(path.startswith("/junk") for path in counted)
    assert counted["(no such route)"] >= 50


def test_requests_dropped_while_queued_cost_no_tokens():
    with running_engine("deterministic", OLLAMA_NUM_PARALLEL="1", RAG_ENGINE_TOKEN_DELAY="0.02") as url:
        assert_serving(url)
        first: list[httpx.Response] = []
        runner = threading.Thread(target=lambda: first.append(post(url, "/api/chat", long_chat(150))))  # ~3 s
        runner.start()
        time.sleep(0.2)
        before = stats(url)
        assert before["running"] == 1
        for _ in range(5):  # each waits behind the first, then its client gives up (1.5 s in all)
            with pytest.raises(httpx.ReadTimeout):
                post(url, "/api/chat", long_chat(60), timeout=0.3)
        runner.join()
        time.sleep(0.5)
        after = stats(url)
        assert first[0].status_code == 200
        assert after["cancelled"] - before["cancelled"] == 5
        assert after["generated_tokens"] - before["generated_tokens"] == 152  # the first answer's tokens alone
        assert (after["running"], after["queued"]) == (0, 0)
