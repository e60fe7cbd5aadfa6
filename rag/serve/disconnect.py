"""A client that leaves stops what it started: its retrieval and generation are cancelled, down to the
open request to Ollama, whose closed connection stops the model generating (as Ollama does).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable
from typing import TypeVar

import anyio
from fastapi import Request
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from rag.errors import ClientDisconnected

log = logging.getLogger(__name__)

T = TypeVar("T")


async def _disconnected(receive: Receive) -> None:
    """Returns when the client has gone (the request body has been read already)."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def while_connected(request: Request, work: Awaitable[T]) -> T:
    """The result of `work`; raises ClientDisconnected, having cancelled `work`, if the client leaves first."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request.receive))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():  # the client left (or this handler is being cancelled): stop the work, and wait
            task.cancel()    # for it to close its connection to Ollama
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if task.cancelled():
        raise ClientDisconnected("the client disconnected; what it started was cancelled")
    return task.result()


class CancellingStream(StreamingResponse):
    """Streams an async generator; when the client leaves, the generator is cancelled and closed at once.

    Starlette relies on the server to report a gone client (ASGI 2.4 servers only when the next chunk
    is sent); here a disconnect is always listened for, and the generator's cleanup always runs.
    """

    body_iterator: AsyncIterator[bytes]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        sent = False
        try:
            async with anyio.create_task_group() as group:

                async def stream() -> None:
                    nonlocal sent
                    await self.stream_response(send)
                    sent = True
                    group.cancel_scope.cancel()

                group.start_soon(stream)
                await self.listen_for_disconnect(receive)
                group.cancel_scope.cancel()
            if not sent:
                log.info("%s %s: the client disconnected mid-stream; its generation was cancelled",
                         scope.get("method"), scope.get("path"))
        finally:
            with anyio.CancelScope(shield=True):
                aclose = getattr(self.body_iterator, "aclose", None)
                if aclose is not None:
                    await aclose()
