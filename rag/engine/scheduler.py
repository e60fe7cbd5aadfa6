"""Loads and unloads models and hands out run slots, with Ollama's parallelism, queue and keep_alive rules."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from rag.engine.catalog import ModelSpec
from rag.engine.protocol import Backend

logger = logging.getLogger(__name__)

FOREVER = datetime(9999, 12, 31, tzinfo=UTC)
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")


class ServerBusy(Exception):
    """More requests are waiting than OLLAMA_MAX_QUEUE allows."""


class LoadFailed(Exception):
    """A model's weights could not be loaded."""


def parse_keep_alive(value: Any) -> float | None:
    """Seconds to keep a model loaded after a request; None means forever (any negative value).

    Ollama's forms: a number of seconds, or a Go duration string such as "5m", "1h30m", "0", "-1".
    """
    if isinstance(value, bool):
        raise ValueError("keep_alive must be a duration or a number of seconds")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        seconds = _duration(value.strip())
    else:
        raise ValueError("keep_alive must be a duration or a number of seconds")
    return None if seconds < 0 else seconds


def _duration(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        pass
    sign = -1.0 if text.startswith("-") else 1.0
    body = text.lstrip("+-")
    if not body or _DURATION.sub("", body):
        raise ValueError(f"invalid keep_alive duration {text!r}")
    return sign * sum(float(n) * _UNITS[u] for n, u in _DURATION.findall(body))


@dataclass
class LoadedModel:
    """A loaded model: one instance (a runner process) per parallel slot."""

    spec: ModelSpec
    n_ctx: int
    instances: list[Any]
    free: list[Any]
    active: int = 0
    broken: bool = False  # a runner died: unload as soon as nothing runs, so the next request starts afresh
    deadline: float | None = None  # time.monotonic() after which an idle model is unloaded
    expires_at: datetime = FOREVER


@dataclass
class Slot:
    model: LoadedModel
    instance: Any
    load_duration: int  # nanoseconds this request spent loading the model
    keep_alive: float | None = field(default=None)


class Scheduler:
    def __init__(self, backend: Backend, executor: Executor, num_parallel: int, max_queue: int) -> None:
        self.backend, self.executor = backend, executor
        self.num_parallel, self.max_queue = num_parallel, max_queue
        self.loaded: dict[str, LoadedModel] = {}
        self._conditions: dict[str, asyncio.Condition] = {}
        self._waiting = 0

    @property
    def waiting(self) -> int:
        """Requests waiting for a slot (or for their model to load)."""
        return self._waiting

    def _condition(self, spec: ModelSpec) -> asyncio.Condition:
        return self._conditions.setdefault(spec.name, asyncio.Condition())

    async def acquire(self, spec: ModelSpec, n_ctx: int, keep_alive: float | None) -> Slot:
        """Wait for a free slot of `spec` loaded with `n_ctx`, loading or reloading it when idle."""
        if self._waiting >= self.max_queue:
            raise ServerBusy()
        self._waiting += 1
        try:
            cond = self._condition(spec)
            async with cond:
                load_ns = 0
                while True:
                    model = self.loaded.get(spec.name)
                    stale = model is not None and model.active == 0 and (model.broken or model.n_ctx != n_ctx)
                    if model is None or stale:
                        load_ns = await self._load(spec, n_ctx)
                        continue
                    if model.n_ctx == n_ctx and model.free:
                        model.active += 1
                        self._set_expiry(model, keep_alive)
                        return Slot(model, model.free.pop(), load_ns, keep_alive)
                    await cond.wait()
        finally:
            self._waiting -= 1

    async def release(self, slot: Slot) -> None:
        """Give a slot back once its work has finished; keep_alive 0 unloads an idle model at once."""
        model = slot.model
        cond = self._condition(model.spec)
        async with cond:
            model.active -= 1
            if getattr(slot.instance, "alive", True):
                model.free.append(slot.instance)
            else:  # its runner died: the queued requests get a fresh runner, not a dead one
                model.broken = True
            self._set_expiry(model, slot.keep_alive)
            if (slot.keep_alive == 0 or model.broken) and model.active == 0:
                self._unload(model)
            cond.notify_all()

    async def unload(self, spec: ModelSpec) -> None:
        """Unload now if idle (Ollama's keep_alive 0 with an empty request), else when the last run ends."""
        async with self._condition(spec):
            model = self.loaded.get(spec.name)
            if model is None:
                return
            if model.active == 0:
                self._unload(model)
            else:
                self._set_expiry(model, 0)

    async def expire(self) -> None:
        now = time.monotonic()
        for model in list(self.loaded.values()):
            if model.active == 0 and model.deadline is not None and model.deadline <= now:
                async with self._condition(model.spec):
                    if model.active == 0 and self.loaded.get(model.spec.name) is model:
                        self._unload(model)

    async def run_expiry(self, interval: float = 1.0) -> None:
        while True:
            await asyncio.sleep(interval)
            await self.expire()

    def close(self) -> None:
        for model in list(self.loaded.values()):
            self._unload(model)

    async def _load(self, spec: ModelSpec, n_ctx: int) -> int:
        if old := self.loaded.get(spec.name):
            why = "its runner died" if old.broken else f"num_ctx {old.n_ctx} -> {n_ctx}"
            logger.info("reloading %s: %s", spec.name, why)
            self._unload(old)
        start = time.perf_counter_ns()
        loop = asyncio.get_running_loop()
        try:
            instances = await loop.run_in_executor(self.executor, self.backend.load, spec, n_ctx, self.num_parallel)
        except Exception as exc:
            logger.error("loading %s failed: %s", spec.name, exc)
            raise LoadFailed(f"failed to load model {spec.name!r}: {exc}") from exc
        self.loaded[spec.name] = LoadedModel(spec, n_ctx, instances, list(instances))
        elapsed = time.perf_counter_ns() - start
        logger.info("loaded %s (num_ctx %s, %s slots) in %.2fs", spec.name, n_ctx, len(instances), elapsed / 1e9)
        return elapsed

    def _unload(self, model: LoadedModel) -> None:
        if self.loaded.get(model.spec.name) is model:
            del self.loaded[model.spec.name]
        for instance in {id(i): i for i in model.instances}.values():
            if close := getattr(instance, "close", None):
                close()
        logger.info("unloaded %s", model.spec.name)

    @staticmethod
    def _set_expiry(model: LoadedModel, keep_alive: float | None) -> None:
        if keep_alive is None:
            model.deadline, model.expires_at = None, FOREVER
        else:
            model.deadline = time.monotonic() + keep_alive
            model.expires_at = datetime.now(UTC) + timedelta(seconds=keep_alive)
