"""The engine: turns validated Ollama requests into model runs on slots the scheduler hands out."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import Executor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from rag.engine.catalog import Kind, ModelSpec, artifact_path, artifact_size, details, digest, resolve
from rag.engine.config import EngineSettings
from rag.engine.jobs import FAILED, Job
from rag.engine.protocol import Backend, ChatModel, ContextExceeded, Embedded, GenerationStats, Sampling
from rag.engine.runner import RunnerCrashed
from rag.engine.scheduler import Scheduler, Slot, parse_keep_alive
from rag.engine.schemas import ApiError, Options

logger = logging.getLogger(__name__)

_VERBS = {"chat": "generate", "embedding": "embeddings"}


class ClientGone(Exception):
    """The client disconnected before its generation started."""


@dataclass
class EngineStats:
    """Server-side counters that tests read from GET /engine/stats."""

    requests: Counter[str] = field(default_factory=Counter)
    embedded_texts: int = 0
    generated_tokens: int = 0
    cancelled: int = 0
    rejected: int = 0
    runner_crashes: int = 0
    last_crash: dict[str, Any] | None = None  # the latest runner death: model, message, time
    can_generate: bool = True  # False from a chat runner's death until a generation completes again
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def generated(self, stats: GenerationStats) -> None:
        with self._lock:
            self.generated_tokens += stats.eval_count
            self.cancelled += stats.done_reason == "cancelled"
            self.can_generate = True

    def dropped_in_queue(self) -> None:
        """A client left before its generation started: cancelled, and no sign either way of the model."""
        with self._lock:
            self.cancelled += 1

    def crashed(self, spec: ModelSpec, message: str) -> None:
        with self._lock:
            self.runner_crashes += 1
            self.last_crash = {"model": spec.name, "error": message, "at": datetime.now(UTC).isoformat()}
            if spec.kind == "chat":
                self.can_generate = False

    def embedded(self, count: int) -> None:
        with self._lock:
            self.embedded_texts += count

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": dict(self.requests),
                "embedded_texts": self.embedded_texts,
                "generated_tokens": self.generated_tokens,
                "cancelled": self.cancelled,
                "rejected": self.rejected,
                "runner_crashes": self.runner_crashes,
                "last_crash": self.last_crash,
                "can_generate": self.can_generate,
            }


@dataclass
class Run:
    """A generation under way: its job, the slot it holds, and what was asked."""

    job: Job
    slot: Slot
    sampling: Sampling
    formatted: bool
    started: int = field(default_factory=time.perf_counter_ns)

    def counters(self, stats: GenerationStats) -> dict[str, int]:
        return {
            "total_duration": time.perf_counter_ns() - self.started,
            "load_duration": self.slot.load_duration,
            "prompt_eval_count": stats.prompt_eval_count,
            "prompt_eval_duration": stats.prompt_eval_duration,
            "eval_count": stats.eval_count,
            "eval_duration": stats.eval_duration,
        }

    def format_error(self, text: str, stats: GenerationStats) -> str | None:
        """Why an output asked to be JSON is unusable, or None when it parses."""
        if not self.formatted:
            return None
        try:
            json.loads(text)
            return None
        except ValueError:
            pass
        if stats.done_reason == "length":
            limit = f"num_predict ({self.sampling.num_predict})" if self.sampling.num_predict >= 0 else "num_ctx"
            return f"the output reached {limit} before it completed the requested format; raise num_predict"
        return "the model's output does not match the requested format"


class Engine:
    def __init__(self, settings: EngineSettings, backend: Backend, scheduler: Scheduler, executor: Executor) -> None:
        self.settings, self.backend, self.scheduler, self.executor = settings, backend, scheduler, executor
        self.stats = EngineStats()
        self.default_keep_alive = parse_keep_alive(settings.keep_alive)
        self.started_at = time.time()
        self._jobs: set[Job] = set()

    def model(self, name: str, kind: Kind | None = None) -> ModelSpec:
        spec = resolve(name)
        if spec is None:
            raise ApiError(404, f'model "{name}" not found, try pulling it first')
        if kind is not None and spec.kind != kind:
            raise ApiError(400, f'"{name}" does not support {_VERBS[kind]}')
        return spec

    def describe(self, spec: ModelSpec) -> dict[str, Any]:
        """A model as /api/tags lists it (blocking: the first call hashes the weights)."""
        path = artifact_path(spec) if self.backend.name == "real" else None
        modified = path.stat().st_mtime if path else self.started_at
        return {
            "name": spec.name,
            "model": spec.name,
            "modified_at": datetime.fromtimestamp(modified, UTC).isoformat().replace("+00:00", "Z"),
            "size": artifact_size(spec) if path else 0,
            "digest": digest(spec, self.backend.name),
            "details": details(spec),
        }

    def show(self, spec: ModelSpec) -> dict[str, Any]:
        """What /api/show says: GGUF-style model_info, the chat template, capabilities (blocking)."""
        template = self.backend.template(spec)
        parameters = 'stop "<|im_start|>"\nstop "<|im_end|>"' if spec.kind == "chat" else ""
        arch = spec.architecture
        modelfile = (
            f'# Modelfile generated by "ollama show" (rag engine, {self.backend.name} backend)\n'
            f'FROM {spec.name}\nTEMPLATE """{template}"""\n'
            + "".join(f"PARAMETER {p}\n" for p in parameters.splitlines())
        )
        return {
            "license": "Apache-2.0",
            "modelfile": modelfile,
            "parameters": parameters,
            "template": template,
            "details": details(spec),
            "model_info": {
                "general.architecture": arch,
                "general.parameter_count": spec.parameter_count,
                f"{arch}.context_length": spec.context_length,
                f"{arch}.embedding_length": spec.embedding_length,
                "engine.backend": self.backend.name,
            },
            "capabilities": spec.capabilities,
            "modified_at": self.describe(spec)["modified_at"],
        }

    def keep_alive(self, value: Any) -> float | None:
        if value is None:
            return self.default_keep_alive
        try:
            return parse_keep_alive(value)
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None

    def n_ctx(self, spec: ModelSpec, options: Options) -> int:
        n_ctx = options.num_ctx or min(self.settings.context_length, spec.context_length)
        if n_ctx > spec.context_length:
            raise ApiError(400, f"num_ctx {n_ctx} exceeds the context length of {spec.name} ({spec.context_length})")
        if n_ctx < 1:
            raise ApiError(400, "num_ctx must be positive")
        return n_ctx

    def grammar(self, fmt: str | dict[str, Any] | None) -> Any:
        if fmt is None or fmt == "":
            return None
        try:
            return self.backend.compile_format(fmt)
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None

    async def load_only(self, spec: ModelSpec, keep_alive: float | None) -> str:
        """Ollama's empty request: load the model (done_reason "load"), or unload it with keep_alive 0."""
        if keep_alive == 0:
            await self.scheduler.unload(spec)
            return "unload"
        slot = await self.scheduler.acquire(spec, self.n_ctx(spec, Options()), keep_alive)
        await self.scheduler.release(slot)
        return "load"

    async def generate(
        self,
        spec: ModelSpec,
        options: Options,
        fmt: str | dict[str, Any] | None,
        keep_alive: float | None,
        prompt: Callable[[ChatModel], str],
        gone: Callable[[], Awaitable[bool]] | None = None,
    ) -> Run:
        """Start a generation; `prompt` renders the text from the loaded model (its chat template).

        `gone` tells whether the client has left while the request waited in the queue: then the slot is
        given back at once instead of spending a prompt evaluation on nobody."""
        n_ctx, grammar = self.n_ctx(spec, options), self.grammar(fmt)
        sampling = options.sampling()
        slot = await self.scheduler.acquire(spec, n_ctx, keep_alive)
        if gone is not None and await gone():
            await self.scheduler.release(slot)
            self.stats.dropped_in_queue()
            raise ClientGone()

        def work(cancel: threading.Event, emit: Callable[[str], None]) -> GenerationStats:
            model: ChatModel = slot.instance
            with self._crash_recorded(spec):
                stats = model.generate(prompt(model), sampling, grammar, cancel, emit)
            self.stats.generated(stats)
            return stats

        job = self._start(work, slot)
        return Run(job, slot, sampling, grammar is not None)

    async def embed(
        self, spec: ModelSpec, texts: list[str], truncate: bool, keep_alive: float | None
    ) -> tuple[Embedded, int]:
        """Embed a whole request in one batched call; returns the vectors and the load time (ns)."""
        slot = await self.scheduler.acquire(spec, spec.context_length, keep_alive)

        def work(cancel: threading.Event, emit: Callable[[str], None]) -> Embedded:
            with self._crash_recorded(spec):
                return slot.instance.embed(texts, truncate)  # type: ignore[no-any-return]

        job = self._start(work, slot)
        kind, value = await job.next()
        if kind == FAILED:
            if isinstance(value, ContextExceeded):
                raise ApiError(400, str(value))
            raise value
        self.stats.embedded(len(texts))
        return value, slot.load_duration

    @contextmanager
    def _crash_recorded(self, spec: ModelSpec) -> Iterator[None]:
        try:
            yield
        except RunnerCrashed as exc:
            self.stats.crashed(spec, str(exc))
            raise

    def cancel_all(self) -> None:
        for job in list(self._jobs):
            job.cancel.set()

    def _start(self, work: Callable[[threading.Event, Callable[[str], None]], Any], slot: Slot) -> Job:
        async def finish() -> None:
            self._jobs.discard(job)
            await self.scheduler.release(slot)

        job = Job(self.executor, work, finish)
        self._jobs.add(job)
        return job
