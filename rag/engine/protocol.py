"""What every backend provides: chat and embedding models, their options and results, and the backend itself.

Backends (real.py, deterministic.py) and the runner processes speak these types; the factory that picks a
backend lives in backends.py, so nothing here imports a backend.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from rag.engine.catalog import ModelSpec

Emit = Callable[[str], None]


class ContextExceeded(ValueError):
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


class EmbeddingModel(Protocol):
    context_length: int

    def embed(self, texts: Sequence[str], truncate: bool) -> Embedded:
        """Raises ContextExceeded when an input is too long and `truncate` is False."""
        ...


class Backend(Protocol):
    name: str

    def load(self, spec: ModelSpec, n_ctx: int, slots: int) -> list[Any]:
        """One ready instance per parallel slot (instances may be shared if thread-safe)."""
        ...

    def compile_format(self, fmt: str | dict[str, Any]) -> Any:
        """Turn Ollama's `format` ("json" or a JSON schema) into what `generate` takes; ValueError if bad."""
        ...

    def template(self, spec: ModelSpec) -> str: ...
