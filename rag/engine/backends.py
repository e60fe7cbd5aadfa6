"""What every backend provides (chat models, embedders, output formats), and the pieces they share."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from rag.engine.catalog import ModelSpec
from rag.engine.config import EngineSettings

Emit = Callable[[str], None]


class InputTooLong(ValueError):
    """An input is longer than the model's context and the caller asked not to truncate it."""


@dataclass(frozen=True)
class Sampling:
    """Ollama's runtime options, with Ollama's defaults."""

    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.9
    min_p: float = 0.0
    typical_p: float = 1.0
    repeat_penalty: float = 1.1
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None
    num_predict: int = -1  # -1: until the model stops or the context is full
    stop: tuple[str, ...] = ()


@dataclass
class GenerationStats:
    prompt_eval_count: int = 0
    prompt_eval_duration: int = 0  # nanoseconds
    eval_count: int = 0
    eval_duration: int = 0
    done_reason: str = "stop"  # stop | length | cancelled


@dataclass
class Embedded:
    vectors: Any  # numpy array (n, dims), rows L2-normalised
    token_counts: list[int] = field(default_factory=list)  # after truncation


class ChatModel(Protocol):
    n_ctx: int

    def render(self, messages: Sequence[dict[str, str]]) -> str: ...

    def prompt_tokens(self, prompt: str) -> int: ...

    def generate(
        self, prompt: str, sampling: Sampling, grammar: Any, cancel: threading.Event, emit: Emit
    ) -> GenerationStats: ...


class Embedder(Protocol):
    context_length: int

    def embed(self, texts: Sequence[str], truncate: bool) -> Embedded: ...


class Backend(Protocol):
    name: str

    def load(self, spec: ModelSpec, n_ctx: int, slots: int) -> list[Any]:
        """One ready instance per parallel slot (instances may be shared if thread-safe)."""
        ...

    def compile_format(self, fmt: str | dict[str, Any]) -> Any:
        """Turn Ollama's `format` ("json" or a JSON schema) into what `generate` takes; ValueError if bad."""
        ...

    def template(self, spec: ModelSpec) -> str: ...


def make_backend(settings: EngineSettings) -> Backend:
    # Imported here so that the deterministic engine never imports llama.cpp or torch.
    if settings.backend == "deterministic":
        from rag.engine.deterministic import DeterministicBackend

        return DeterministicBackend(settings)
    from rag.engine.real import RealBackend

    return RealBackend(settings)


def output_budget(prompt_tokens: int, n_ctx: int, num_predict: int) -> int:
    """How many tokens may be generated: num_predict, capped by what is left of the context."""
    room = max(n_ctx - prompt_tokens, 0)
    return room if num_predict < 0 else min(num_predict, room)


def fit_prompt(tokens: list[Any], n_ctx: int) -> list[Any]:
    """Keep the end of a prompt longer than the context, leaving a quarter of it for the answer.

    Ollama truncates over-long prompts from the front too (and then shifts the context while generating).
    """
    keep = n_ctx - max(n_ctx // 4, 1)
    return tokens if len(tokens) <= keep else tokens[len(tokens) - keep :]


class StopMatcher:
    """Finds stop sequences in streamed text, holding back only what could still become one."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = [s for s in stops if s]
        self.pending = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """Returns (text safe to emit, whether a stop sequence was reached)."""
        self.pending += text
        hits = [i for i in (self.pending.find(s) for s in self.stops) if i >= 0]
        if hits:
            out, self.pending = self.pending[: min(hits)], ""
            return out, True
        hold = max((self._overlap(s) for s in self.stops), default=0)
        cut = len(self.pending) - hold
        out, self.pending = self.pending[:cut], self.pending[cut:]
        return out, False

    def flush(self) -> str:
        out, self.pending = self.pending, ""
        return out

    def _overlap(self, stop: str) -> int:
        for k in range(min(len(stop) - 1, len(self.pending)), 0, -1):
            if self.pending.endswith(stop[:k]):
                return k
        return 0
