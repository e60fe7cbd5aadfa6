"""The engine's small rules, checked directly: names, keep_alive, stop sequences, schema stand-ins."""

from __future__ import annotations

import pytest

from rag.engine.catalog import normalize_name, resolve
from rag.engine.deterministic import WORD, instance
from rag.engine.generation import StopMatcher, fit_prompt, output_budget
from rag.engine.scheduler import parse_keep_alive


@pytest.mark.parametrize(
    ("name", "canonical"),
    [
        ("all-minilm", "all-minilm:latest"),
        ("All-MiniLM:latest", "all-minilm:latest"),
        ("library/smollm2:135m", "smollm2:135m"),
        ("registry.ollama.ai/library/smollm2:135m", "smollm2:135m"),
    ],
)
def test_names_follow_ollamas_rules(name, canonical):
    assert normalize_name(name) == canonical
    assert resolve(name) is not None


def test_smollm2_without_its_tag_is_not_bundled():
    assert resolve("smollm2") is None  # that would be smollm2:latest (1.7B) in Ollama's library


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("250ms", 0.25),
        ("0", 0.0),
        (0, 0.0),
        (90, 90.0),
        ("90", 90.0),
        (-1, None),
        ("-1", None),
        ("-1m", None),
    ],
)
def test_keep_alive_forms(value, seconds):
    assert parse_keep_alive(value) == seconds


@pytest.mark.parametrize("value", ["soon", "5 minutes", "", True, [1]])
def test_bad_keep_alive_is_refused(value):
    with pytest.raises(ValueError, match="keep_alive"):
        parse_keep_alive(value)


def test_stop_matcher_holds_back_only_possible_stop_prefixes():
    stopper = StopMatcher(["</end>"])
    assert stopper.feed("hello </") == ("hello ", False)
    assert stopper.feed("e") == ("", False)
    assert stopper.feed("nd> tail") == ("", True)
    other = StopMatcher(["STOP"])
    assert other.feed("a S") == ("a ", False)
    assert other.feed("x") == ("Sx", False)
    assert other.flush() == ""


def test_output_budget_and_prompt_fitting():
    assert output_budget(100, 2048, -1) == 1948
    assert output_budget(100, 2048, 50) == 50
    assert output_budget(2048, 2048, 50) == 0
    assert fit_prompt(list(range(10)), 2048) == list(range(10))
    kept = fit_prompt(list(range(5000)), 2048)
    assert len(kept) == 1536
    assert kept[-1] == 4999


def test_stand_in_tokenizer_splits_words_cjk_and_punctuation():
    assert WORD.findall("Hello, 世界!") == ["Hello", ",", "世", "界", "!"]


def test_schema_stand_in_satisfies_refs_and_types():
    schema = {
        "$defs": {"Item": {"type": "object", "properties": {"n": {"type": "integer"}}}},
        "type": "object",
        "properties": {
            "items": {"type": "array", "items": {"$ref": "#/$defs/Item"}},
            "kind": {"enum": ["a", "b"]},
            "note": {"anyOf": [{"type": "string"}, {"type": "null"}]},
            "ok": {"type": "boolean"},
        },
    }
    value = instance(schema, schema, ["some", "words"])
    assert value == {"items": [{"n": 2}], "kind": "a", "note": "some words", "ok": True}
