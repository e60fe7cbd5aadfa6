"""The faithfulness judge: RAGAS-style statements and verdicts from an Ollama chat model, schema-constrained.

Faithfulness = statements supported by the retrieved context / all statements in the answer. The answer is
first split into sentences by rule (English `.!?`, Chinese `。！？`, citations like [1] dropped); the judge
then rewrites each sentence as one or more standalone statements without seeing the context (so it cannot
quietly drop what the context does not support), and in a second call gives each statement a verdict.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import ollama

from rag.config import Settings
from rag.errors import OllamaError, OllamaUnavailable, RagError
from rag.ollama import call, chat_options, ollama_client

log = logging.getLogger(__name__)

# Room for a few statements with short reasons. Only num_ctx makes Ollama reload, so this may differ.
JUDGE_NUM_PREDICT = 1024
MAX_STATEMENTS_PER_SENTENCE = 3
MAX_TEXT = 200  # characters per statement or reason: a small model must not ramble out of its budget

_CITATION = re.compile(r"\s*\[\d+(?:\s*,\s*\d+)*\]")
_ANSWER_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|(?<=[。！？])")
_NUMBERING = re.compile(r"^\d+(?:[.)]\s+|、\s*)")

STATEMENTS_PROMPT = (
    "You break an answer into short standalone statements. For each numbered sentence of the answer, "
    "write one or more statements that together say exactly what that sentence says. Each statement must "
    "be understandable on its own: replace pronouns such as 'it' or 'they' with what they refer to, using "
    "the question. Do not add anything the sentence does not say. Write in the sentence's language."
)
VERDICTS_PROMPT = (
    "You check statements against a context. For each numbered statement give a short reason, then the "
    "verdict 'yes' if the statement can be directly inferred from the context, or 'no' if the context does "
    "not say it or says something different. Judge only by the context, not by what you know."
)
REPAIR_PROMPT = "That reply could not be used: {error}. Reply again with only the JSON object the schema asks for."


class JudgeFailed(RagError):
    """The judge's reply was unusable even after one repair attempt; the row is counted as a failure."""

    code = "judge_failed"

    def __init__(self, message: str, raw: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.raw = list(raw)


class InvalidReply(ValueError):
    """A reply that parsed but does not have the shape asked for."""


def answer_sentences(text: str) -> list[str]:
    """The sentences of an answer as strings, citation marks removed; fragments without a word are dropped.

    Not ingest.chunking.split_sentences, which gives character spans of a document for chunking.
    """
    flat = _CITATION.sub("", text)
    return [s.strip() for s in _ANSWER_SENTENCE_END.split(flat) if re.search(r"\w", s)]


def _array(items: dict[str, Any], low: int, high: int) -> dict[str, Any]:
    return {"type": "array", "items": items, "minItems": low, "maxItems": high}


def text_schema() -> dict[str, Any]:
    """A short non-empty string: a statement, a reason, a drafted question or answer."""
    return {"type": "string", "minLength": 1, "maxLength": MAX_TEXT}


def statements_schema(sentences: int) -> dict[str, Any]:
    per_sentence = {
        "type": "object",
        "properties": {"statements": _array(text_schema(), 1, MAX_STATEMENTS_PER_SENTENCE)},
        "required": ["statements"],
    }
    return {"type": "object", "properties": {"sentences": _array(per_sentence, sentences, sentences)},
            "required": ["sentences"]}


def verdicts_schema(statements: int) -> dict[str, Any]:
    verdict = {
        "type": "object",
        "properties": {"reason": text_schema(), "verdict": {"type": "string", "enum": ["yes", "no"]}},
        "required": ["reason", "verdict"],
    }
    return {"type": "object", "properties": {"verdicts": _array(verdict, statements, statements)},
            "required": ["verdicts"]}


def prompts_sha256() -> str:
    """Identifies the judge's instructions and schemas in a report: a changed prompt is a different judge."""
    material = [STATEMENTS_PROMPT, VERDICTS_PROMPT, REPAIR_PROMPT, statements_schema(1), verdicts_schema(1)]
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


def _numbered_lines(lines: Sequence[str]) -> str:
    return "\n".join(f"{i}. {line}" for i, line in enumerate(lines, start=1))


def _items(reply: Any, key: str, count: int) -> list[Any]:
    items = reply.get(key) if isinstance(reply, dict) else None
    if not isinstance(items, list):
        raise InvalidReply(f'expected an object with a "{key}" list')
    if len(items) != count:
        raise InvalidReply(f'"{key}" has {len(items)} items; expected exactly {count}')
    return items


def _statements_of(item: Any) -> list[str]:
    found = item.get("statements") if isinstance(item, dict) else None
    if not isinstance(found, list) or not found or not all(isinstance(s, str) and s.strip() for s in found):
        raise InvalidReply('every sentence needs a "statements" list of non-empty strings')
    # Small models copy the numbering of the prompt into their statements.
    return [_NUMBERING.sub("", s.strip()) or s.strip() for s in found]


class StructuredChat:
    """Chat calls whose reply must be JSON for a schema: temperature 0, a fixed seed, one repair attempt."""

    def __init__(self, settings: Settings, model: str, seed: int | None = None,
                 client: ollama.Client | None = None) -> None:
        self.settings = settings
        self.model = model
        self.options = {**chat_options(settings), "temperature": 0.0, "num_predict": JUDGE_NUM_PREDICT,
                        "seed": settings.seed if seed is None else seed}
        self._client = client or ollama_client(settings)

    def _chat(self, messages: list[dict[str, str]], schema: dict[str, Any]) -> str:
        response = call(self.settings, self.model, lambda: self._client.chat(
            model=self.model, messages=messages, format=schema, options=self.options,
            keep_alive=self.settings.keep_alive,
        ))
        return str(response.message.content or "")

    def _repair_reason(self, exc: RagError) -> str:
        """What the repair request tells the model: the server's own words, never its address or port,
        which would make the same row judge differently on another host or port."""
        if isinstance(exc.__cause__, ollama.ResponseError):
            return str(exc.__cause__.error)
        if isinstance(exc.__cause__, httpx.TimeoutException):
            return f"no reply within {self.settings.request_timeout:g} seconds"
        return exc.message

    def ask(self, messages: list[dict[str, str]], schema: dict[str, Any], check: Callable[[Any], Any],
            raw: list[str]) -> Any:
        """check(parsed reply) returns the value or raises InvalidReply; every reply is appended to raw."""
        error = ""
        for attempt in range(2):
            try:
                reply = self._chat(messages, schema)
            except (OllamaError, OllamaUnavailable) as exc:
                # An error answer for this call ("output does not match the requested format") or a call that
                # timed out is an unusable reply like any other; a server that cannot be reached, or a missing
                # model, stops the run.
                if isinstance(exc, OllamaUnavailable) and not isinstance(exc.__cause__, httpx.TimeoutException):
                    raise
                reply, error, reason = "", exc.message, self._repair_reason(exc)
                raw.append(f"(error) {error}")
            else:
                raw.append(reply)
                try:
                    return check(json.loads(reply))
                except (json.JSONDecodeError, InvalidReply) as exc:
                    error = reason = str(exc)
            log.info("unusable reply from %s (attempt %s): %s", self.model, attempt + 1, error)
            messages = [*messages, {"role": "assistant", "content": reply},
                        {"role": "user", "content": REPAIR_PROMPT.format(error=reason)}]
        raise JudgeFailed(f"unusable reply after one repair attempt: {error}", raw)


@dataclass
class Verdict:
    sentence: int  # 1-based index into the answer's sentences
    statement: str
    supported: bool
    reason: str


@dataclass
class Judgement:
    score: float | None  # None when the judge failed
    verdicts: list[Verdict] = field(default_factory=list)
    raw: list[str] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0


class Judge:
    """Scores an answer's faithfulness to its context; JSON-schema replies, temperature 0, fixed seed."""

    def __init__(self, settings: Settings, model: str | None = None, seed: int | None = None,
                 client: ollama.Client | None = None) -> None:
        self.model = model or settings.chat_model
        self.chat = StructuredChat(settings, self.model, seed, client)

    def faithfulness(self, question: str, answer: str, context: Sequence[str]) -> Judgement:
        start, raw = time.perf_counter(), list[str]()
        try:
            statements = self.statements(question, answer, raw)
            verdicts = self.verdicts(context, statements, raw)
        except JudgeFailed as exc:
            return Judgement(None, [], raw, exc.message, time.perf_counter() - start)
        score = sum(v.supported for v in verdicts) / len(verdicts)
        return Judgement(score, verdicts, raw, None, time.perf_counter() - start)

    def statements(self, question: str, answer: str, raw: list[str]) -> list[tuple[int, str]]:
        """(sentence number, statement) pairs: each sentence gives at least one statement."""
        sentences = answer_sentences(answer)
        if not sentences:
            raise JudgeFailed("the answer has no sentence to judge")
        messages = [{"role": "system", "content": STATEMENTS_PROMPT},
                    {"role": "user", "content": f"Question: {question}\n\nSentences:\n{_numbered_lines(sentences)}"}]
        per_sentence = self.chat.ask(
            messages, statements_schema(len(sentences)),
            lambda reply: [_statements_of(item) for item in _items(reply, "sentences", len(sentences))], raw,
        )
        return [(n, s) for n, found in enumerate(per_sentence, start=1) for s in found]

    def verdicts(self, context: Sequence[str], statements: list[tuple[int, str]], raw: list[str]) -> list[Verdict]:
        texts = [s for _, s in statements]
        joined = "\n\n".join(context)
        messages = [{"role": "system", "content": VERDICTS_PROMPT},
                    {"role": "user", "content": f"Context:\n{joined}\n\nStatements:\n{_numbered_lines(texts)}"}]

        def check(reply: Any) -> list[Verdict]:
            out = []
            for (n, text), item in zip(statements, _items(reply, "verdicts", len(texts)), strict=True):
                verdict = item.get("verdict") if isinstance(item, dict) else None
                if verdict not in ("yes", "no"):
                    raise InvalidReply('every verdict must be "yes" or "no"')
                out.append(Verdict(n, text, verdict == "yes", str(item.get("reason", "")).strip()))
            return out

        return list(self.chat.ask(messages, verdicts_schema(len(texts)), check, raw))
