"""Runs model work on a worker thread so the event loop stays free, streaming its output back to the loop."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from typing import Any

logger = logging.getLogger(__name__)

DONE, PIECE, FAILED = "done", "piece", "failed"
_pending: set[asyncio.Task[None]] = set()


class Job:
    """One call `work(cancel, emit)` on the executor. `cancel` is checked by the work between tokens;
    `on_finish` runs on the loop after the thread has returned (so a slot is never freed while in use)."""

    def __init__(
        self,
        executor: Executor,
        work: Callable[[threading.Event, Callable[[str], None]], Any],
        on_finish: Callable[[], Awaitable[None]],
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.cancel = threading.Event()
        self.queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._work, self._on_finish = work, on_finish
        self.future = self.loop.run_in_executor(executor, self._run)
        self.future.add_done_callback(self._schedule_finish)

    def _schedule_finish(self, _: object) -> None:
        task = self.loop.create_task(self._finish())
        _pending.add(task)  # the loop keeps only weak references to tasks
        task.add_done_callback(_pending.discard)

    def _emit(self, piece: str) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, (PIECE, piece))

    def _run(self) -> None:
        try:
            result = self._work(self.cancel, self._emit)
        except Exception as exc:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, (FAILED, exc))
        else:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, (DONE, result))

    async def _finish(self) -> None:
        try:
            await self._on_finish()
        except Exception:
            logger.exception("releasing a model slot failed")

    async def next(self) -> tuple[str, Any]:
        """(PIECE, text) as the work emits, then (DONE, result) or (FAILED, exception)."""
        return await self.queue.get()
