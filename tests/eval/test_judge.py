"""The faithfulness judge against real servers: a scripted Ollama, the deterministic engine, the real model."""

from __future__ import annotations

import json

import pytest

from rag.errors import OllamaUnavailable
from rag.eval.judge import Judge, statements_schema, verdicts_schema
from tests.support.helpers import dead_url, make_settings
from tests.support.scripted_ollama import scripted_ollama

CONTEXT = "The nightly snapshot of storage/ runs at 02:30. Budget 6 KB of disk per chunk."


def judge_at(tmp_path, url: str, **kwargs) -> Judge:
    return Judge(make_settings(tmp_path, url), **kwargs)


def test_invalid_json_is_retried_once_then_counted_as_a_failure(tmp_path):
    with scripted_ollama(["{not json"]) as (url, script):
        got = judge_at(tmp_path, url).faithfulness("When?", "It runs at 02:30.", [CONTEXT])
    assert len(script.requests) == 2
    assert got.score is None
    assert "after one repair attempt" in (got.error or "")
    assert got.raw == ["{not json", "{not json"]
    repair = script.requests[1]["messages"]
    assert repair[-2] == {"role": "assistant", "content": "{not json"}
    assert "could not be used" in repair[-1]["content"]


def test_every_call_is_schema_constrained_at_temperature_0_with_a_fixed_seed(tmp_path):
    with scripted_ollama(["[]"]) as (url, script):
        judge_at(tmp_path, url, seed=7).faithfulness("When?", "It runs at 02:30. It is quick.", [CONTEXT])
    sent = script.requests[0]
    assert sent["format"] == statements_schema(2)
    assert sent["options"]["temperature"] == 0.0
    assert sent["options"]["seed"] == 7
    assert sent["options"]["num_ctx"] == 4096


def test_a_repaired_reply_is_scored(tmp_path):
    statements = {"sentences": [{"statements": ["The snapshot runs at 02:30."]},
                                {"statements": ["The snapshot takes 4 KB.", "It runs nightly."]}]}
    verdicts = {"verdicts": [{"reason": "stated", "verdict": "yes"}, {"reason": "6 KB", "verdict": "no"},
                             {"reason": "stated", "verdict": "yes"}]}
    # statements: wrong count first (schema-valid JSON, but 1 sentence for 2), then right; verdicts at once.
    replies = [json.dumps({"sentences": [{"statements": ["x"]}]}), json.dumps(statements), json.dumps(verdicts)]
    with scripted_ollama(replies) as (url, script):
        got = judge_at(tmp_path, url).faithfulness("When?", "It runs at 02:30. It takes 4 KB nightly.", [CONTEXT])
    assert len(script.requests) == 3
    assert "expected exactly 2" in script.requests[1]["messages"][-1]["content"]
    assert script.requests[2]["format"] == verdicts_schema(3)
    assert got.score == pytest.approx(2 / 3)
    assert [(v.sentence, v.supported) for v in got.verdicts] == [(1, True), (2, False), (2, True)]
    assert got.error is None


def test_an_error_answer_is_repaired_with_the_servers_words_not_its_address(tmp_path):
    # The repair request must be the same on any host and port, or the same row judges differently there.
    refused = "the model's output does not match the requested format"
    statements = {"sentences": [{"statements": ["The snapshot runs at 02:30."]}]}
    verdicts = {"verdicts": [{"reason": "stated", "verdict": "yes"}]}
    with scripted_ollama([(500, refused), json.dumps(statements), json.dumps(verdicts)]) as (url, script):
        got = judge_at(tmp_path, url).faithfulness("When?", "It runs at 02:30.", [CONTEXT])
    repair = script.requests[1]["messages"][-1]["content"]
    assert refused in repair
    assert url.split("//")[1] not in repair
    assert got.score == 1.0
    assert got.raw[0] == f"(error) Ollama at {url} answered 500: {refused}"  # the record keeps the whole message


def test_a_call_that_times_out_is_retried_once_then_counted_as_a_failure(tmp_path):
    with scripted_ollama(["{}"], delay=1.5) as (url, script):
        judge = Judge(make_settings(tmp_path, url, request_timeout=0.5))
        got = judge.faithfulness("When?", "It runs at 02:30.", [CONTEXT])
    assert len(script.requests) == 2
    assert got.score is None
    assert "did not answer within 0.5s" in (got.error or "")


def test_ollama_down_stops_the_run_rather_than_counting_failures(tmp_path):
    with pytest.raises(OllamaUnavailable, match="cannot reach Ollama"):
        judge_at(tmp_path, dead_url()).faithfulness("When?", "It runs at 02:30.", [CONTEXT])


def test_schema_replies_from_the_engine_give_one_verdict_per_statement(tmp_path, fast_engine):
    got = judge_at(tmp_path, fast_engine).faithfulness("When?", "It runs at 02:30. 备份保存三十天。", [CONTEXT])
    assert got.error is None
    assert len(got.raw) == 2
    assert {v.sentence for v in got.verdicts} == {1, 2}
    assert got.score == 1.0  # the stand-in picks the first enum value, "yes"
