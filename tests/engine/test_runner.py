"""Model runners: a model dying in its child process never takes the engine down.

Fault injection on the deterministic backend (a fast stand-in, named as such): the runner process, the pipe,
the scheduler and the HTTP answers are the same code as with the real models; only the model inside differs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest

from rag.engine.config import EngineSettings
from rag.engine.selfcheck import self_check
from tests.support.servers import ROOT, free_port, running_engine

CHAT, EMBED = "smollm2:135m", "all-minilm"


def stats(url: str) -> dict:
    return httpx.get(f"{url}/engine/stats", timeout=10).json()


def runner_pid(url: str, model: str) -> int:
    pids = [r["pid"] for r in stats(url)["runners"] if r["model"].startswith(model)]
    assert len(pids) == 1, stats(url)
    return int(pids[0])


def chat(url: str, text: str, stream: bool = False, timeout: float = 30) -> httpx.Response:
    body = {"model": CHAT, "messages": [{"role": "user", "content": text}], "stream": stream}
    return httpx.post(f"{url}/api/chat", json=body, timeout=timeout)


def long_text(words: int) -> str:
    return " ".join(f"w{i}" for i in range(words))


@pytest.fixture(scope="module")
def faulty_engine():
    """20 ms a token; prompts may ask their runner to die (RAG_ENGINE_TEST_FAULTS, off outside tests)."""
    with running_engine("deterministic", RAG_ENGINE_TOKEN_DELAY="0.02", RAG_ENGINE_TEST_FAULTS="1") as url:
        yield url


def test_sigkill_mid_stream_ends_the_stream_with_an_error_record_and_the_next_request_answers(faulty_engine):
    url = faulty_engine
    assert chat(url, "warm up").status_code == 200
    pid = runner_pid(url, CHAT)
    body = {"model": CHAT, "messages": [{"role": "user", "content": long_text(300)}], "stream": True}
    with httpx.stream("POST", f"{url}/api/chat", json=body, timeout=30) as r:
        lines = r.iter_lines()
        for _ in range(3):
            assert json.loads(next(lines))["done"] is False
        os.kill(pid, signal.SIGKILL)
        rest = [json.loads(line) for line in lines if line]
    assert rest[-1] == {
        "error": f"model runner for {CHAT} terminated: signal SIGKILL (killed, e.g. by the out-of-memory killer); "
        "if nothing killed it on purpose, the machine ran out of memory; lower OLLAMA_NUM_PARALLEL or num_ctx"
    }
    after = chat(url, "again")
    assert after.status_code == 200
    assert after.json()["message"]["content"] == "You said: again"
    assert runner_pid(url, CHAT) != pid  # a fresh runner
    assert stats(url)["can_generate"] is True


@pytest.mark.parametrize(
    ("sig", "words"),
    [
        ("SIGSEGV", "segmentation fault"),
        ("SIGILL", "illegal instruction"),
        ("SIGABRT", "aborted"),
    ],
)
def test_a_runner_that_faults_is_a_500_naming_the_signal_and_the_engine_stays_up(faulty_engine, sig, words):
    url = faulty_engine
    before = stats(url)["runner_crashes"]
    r = chat(url, f"please <<runner-fault:{sig}>>")
    assert r.status_code == 500
    error = r.json()["error"]
    assert error.startswith(f"model runner for {CHAT} terminated: signal {sig} ({words})")
    if sig == "SIGILL":
        assert "does not match this CPU" in error
    assert httpx.get(f"{url}/api/version", timeout=5).status_code == 200
    crashed = stats(url)
    assert crashed["runner_crashes"] == before + 1
    assert crashed["can_generate"] is False  # until a generation succeeds again
    assert crashed["last_crash"]["error"] == error
    assert CHAT not in crashed["loaded"]  # /api/ps and the stats show no dead runner
    assert chat(url, "fine").json()["message"]["content"] == "You said: fine"


def test_a_streamed_fault_ends_with_an_error_line(faulty_engine):
    with httpx.stream(
        "POST", f"{faulty_engine}/api/generate", timeout=30,
        json={"model": CHAT, "prompt": "<<runner-fault:SIGSEGV>>", "stream": True},
    ) as r:
        assert r.status_code == 200
        lines = [json.loads(line) for line in r.iter_lines() if line]
    assert lines[-1]["error"].startswith(f"model runner for {CHAT} terminated: signal SIGSEGV")


def test_requests_queued_behind_a_dying_runner_are_served_by_a_fresh_one(faulty_engine):
    url = faulty_engine
    assert chat(url, "warm up").status_code == 200
    pid = runner_pid(url, CHAT)
    results: dict[str, httpx.Response] = {}

    def ask(name: str, text: str) -> None:
        results[name] = chat(url, text)

    first = threading.Thread(target=ask, args=("first", long_text(300)))  # ~6 s of tokens
    first.start()
    time.sleep(0.5)
    queued = threading.Thread(target=ask, args=("queued", "after the crash"))
    queued.start()
    time.sleep(0.3)
    os.kill(pid, signal.SIGKILL)
    first.join(timeout=30)
    queued.join(timeout=30)
    assert results["first"].status_code == 500
    assert "signal SIGKILL" in results["first"].json()["error"]
    assert results["queued"].status_code == 200
    assert results["queued"].json()["message"]["content"] == "You said: after the crash"


def test_an_embedding_runner_killed_mid_request_is_a_500_and_the_next_embed_answers():
    with running_engine("deterministic", RAG_ENGINE_EMBED_DELAY="2") as url:
        body = {"model": EMBED, "input": ["a", "b"]}
        assert httpx.post(f"{url}/api/embed", json=body, timeout=30).status_code == 200
        pid = runner_pid(url, EMBED)
        result: list[httpx.Response] = []
        worker = threading.Thread(target=lambda: result.append(httpx.post(f"{url}/api/embed", json=body, timeout=30)))
        worker.start()
        time.sleep(0.5)
        os.kill(pid, signal.SIGKILL)
        worker.join(timeout=30)
        assert result[0].status_code == 500
        assert result[0].json()["error"].startswith("model runner for all-minilm:latest terminated: signal SIGKILL")
        again = httpx.post(f"{url}/api/embed", json=body, timeout=30)
        assert again.status_code == 200
        assert len(again.json()["embeddings"]) == 2


def test_ps_lists_the_loaded_runner(faulty_engine):
    assert chat(faulty_engine, "hello").status_code == 200
    names = [m["name"] for m in httpx.get(f"{faulty_engine}/api/ps", timeout=10).json()["models"]]
    assert CHAT in names


def test_an_engine_whose_model_cannot_generate_a_long_prompt_refuses_to_start_with_one_line():
    """As with a llama.cpp build using AMX on a VM that faults on it: short prompts work, long ones die."""
    env = {
        **os.environ,
        "OLLAMA_HOST": f"127.0.0.1:{free_port()}",
        "RAG_ENGINE_BACKEND": "deterministic",
        "RAG_ENGINE_TEST_FAULTS": "1",
        "RAG_ENGINE_TEST_FAULT_LONG_PROMPT": "SIGILL",
        "PYTHONPATH": str(ROOT),
    }
    done = subprocess.run(
        [sys.executable, "-m", "rag", "engine"], env=env, capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: self-check: model runner for {CHAT} terminated: signal SIGILL (illegal instruction); "
        "the llama.cpp build does not match this CPU; rebuild it portably with `make install` (see README)"
    ]
    assert "Traceback" not in done.stderr


def test_the_self_check_generates_from_a_prompt_of_at_least_512_tokens():
    settings = EngineSettings(_env_file=None, backend="deterministic")  # type: ignore[call-arg]
    assert self_check(settings) >= 512
