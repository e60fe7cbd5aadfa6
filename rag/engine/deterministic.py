"""The deterministic backend: instant stand-ins for protocol, fault-injection and scale tests.

Not a language model. Embeddings hash words and character trigrams into 384 dimensions, so texts sharing
words are similar; chat answers "You said: <last user message>" one word per token. Same names, options,
limits and HTTP API as the real backend, so clients cannot tell the protocol apart.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np

from rag.engine.catalog import ModelSpec
from rag.engine.config import EngineSettings
from rag.engine.generation import StopMatcher, fit_prompt, output_budget
from rag.engine.protocol import ContextExceeded, Embedded, Emit, GenerationStats, Sampling

CJK = r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af]"
# The stand-in tokenizer: a word, one CJK character or one punctuation mark is a token.
WORD = re.compile(rf"{CJK}|(?:(?!{CJK})\w)+|[^\w\s]")
PIECE = re.compile(r"\s*\S+")  # an output token: a word with the whitespace before it
TURN = re.compile(r"<\|im_start\|>(\w+)\n(.*?)<\|im_end\|>", re.S)
TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}<|im_start|>assistant\n"
)


@lru_cache(maxsize=1 << 16)
def _bucket(feature: str, dims: int) -> tuple[int, float]:
    h = int.from_bytes(hashlib.blake2b(feature.encode(), digest_size=8).digest(), "little")
    return h % dims, 1.0 if (h >> 32) & 1 else -1.0


class HashEmbedder:
    def __init__(self, spec: ModelSpec, delay: float) -> None:
        self.dims, self.context_length, self.delay = spec.embedding_length, spec.context_length, delay

    def _vector(self, words: list[str]) -> np.ndarray:
        vec = np.zeros(self.dims, dtype=np.float32)
        for word in words:
            features = [f"w:{word}"] + [f"c:{t}" for t in _trigrams(f"<{word}>")]
            weight = 1.0 / len(features) ** 0.5
            for feature in features:
                index, sign = _bucket(feature, self.dims)
                vec[index] += sign * weight
        norm = float(np.linalg.norm(vec))
        if norm == 0.0:  # an empty text still gets a unit vector
            vec[0], norm = 1.0, 1.0
        return vec / norm

    def embed(self, texts: Sequence[str], truncate: bool) -> Embedded:
        time.sleep(self.delay)
        tokens = [WORD.findall(text.lower()) for text in texts]
        if not truncate and any(len(t) > self.context_length for t in tokens):
            raise ContextExceeded("the input length exceeds the context length")
        tokens = [t[: self.context_length] for t in tokens]
        vectors = np.stack([self._vector(t) for t in tokens]) if tokens else np.zeros((0, self.dims))
        return Embedded(vectors, [len(t) for t in tokens])


def _trigrams(word: str) -> list[str]:
    return [word[i : i + 3] for i in range(max(len(word) - 2, 1))]


class EchoChat:
    def __init__(self, n_ctx: int, delay: float) -> None:
        self.n_ctx, self.delay = n_ctx, delay

    def render(self, messages: Sequence[dict[str, str]]) -> str:
        turns = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
        return f"{turns}<|im_start|>assistant\n"

    def prompt_tokens(self, prompt: str) -> int:
        return len(WORD.findall(prompt))

    def answer(self, prompt: str, fmt: Any) -> str:
        users = [content for role, content in TURN.findall(prompt) if role == "user"]
        said = " ".join((users[-1] if users else prompt).split())
        if fmt is None:
            return f"You said: {said}"
        if fmt == "json":
            return json.dumps({"response": said})
        return json.dumps(instance(fmt, fmt, said.split() or ["text"]))

    def generate(
        self, prompt: str, sampling: Sampling, grammar: Any, cancel: threading.Event, emit: Emit
    ) -> GenerationStats:
        start = time.perf_counter_ns()
        prompt_tokens = len(fit_prompt(WORD.findall(prompt), self.n_ctx))
        stats = GenerationStats(prompt_eval_count=prompt_tokens, done_reason="stop")
        budget = output_budget(prompt_tokens, self.n_ctx, sampling.num_predict)
        stopper = StopMatcher(sampling.stop)
        first, stopped = time.perf_counter_ns(), False
        for piece in PIECE.findall(self.answer(prompt, grammar)):
            if stats.eval_count >= budget:
                stats.done_reason = "length"
                break
            if cancel.is_set():
                stats.done_reason = "cancelled"
                break
            time.sleep(self.delay)
            stats.eval_count += 1
            text, stopped = stopper.feed(piece)
            if text:
                emit(text)
            if stopped:
                break
        if not stopped and (rest := stopper.flush()):
            emit(rest)
        end = time.perf_counter_ns()
        stats.prompt_eval_duration, stats.eval_duration = first - start, end - first
        return stats


def instance(schema: Any, root: dict[str, Any], words: list[str]) -> Any:
    """A small value satisfying a JSON schema: the stand-in for grammar-constrained sampling."""
    if not isinstance(schema, dict):
        return None
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return instance(root.get("$defs", root.get("definitions", {})).get(name, {}), root, words)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            return instance(schema[key][0], root, words)
    kind = schema.get("type", "object" if "properties" in schema else "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        return {k: instance(v, root, words) for k, v in schema.get("properties", {}).items()}
    if kind == "array":
        return [instance(schema.get("items", {}), root, words)] * max(int(schema.get("minItems", 1)), 1)
    simple = {
        "string": " ".join(words[:3]),
        "integer": len(words),
        "number": len(words) / 2,
        "boolean": True,
        "null": None,
    }
    return simple.get(kind)


class DeterministicBackend:
    name = "deterministic"

    def __init__(self, settings: EngineSettings) -> None:
        self.token_delay, self.embed_delay = settings.token_delay, settings.embed_delay

    def load(self, spec: ModelSpec, n_ctx: int, slots: int) -> list[Any]:
        if spec.kind == "embedding":
            return [HashEmbedder(spec, self.embed_delay)] * slots
        return [EchoChat(n_ctx, self.token_delay) for _ in range(slots)]

    def compile_format(self, fmt: str | dict[str, Any]) -> Any:
        if fmt != "json" and not isinstance(fmt, dict):
            raise ValueError("invalid JSON schema in format")
        return fmt

    def template(self, spec: ModelSpec) -> str:
        return TEMPLATE if spec.kind == "chat" else ""
