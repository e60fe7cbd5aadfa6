"""Request size limits: a body over RAG_MAX_BODY_BYTES is refused with 413 before it is read.

The question (4,000 characters) and the conversation (200 messages) are limited by the request models
(rag/serve/schemas.py), which refuse more with a 422 naming the field.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rag.errors import PayloadTooLarge, RagError


class BodyLimit:
    """ASGI middleware: 413 for a body larger than `limit` bytes, by its Content-Length or, for a chunked
    body, by reading at most `limit` + 1 bytes of it (then handed on as received)."""

    def __init__(self, app: ASGIApp, limit: int, reject: Callable[[RagError, str], Response]) -> None:
        self.app, self.limit, self.reject = app, limit, reject

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        length = next((v for k, v in scope["headers"] if k.lower() == b"content-length"), None)
        if length is not None:
            if length.isdigit() and int(length) > self.limit:
                await self.too_large(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        messages: list[Message] = []
        size, more = 0, True
        while more:
            message = await receive()
            messages.append(message)
            size += len(message.get("body", b""))
            more = message["type"] == "http.request" and message.get("more_body", False)
            if size > self.limit:
                await self.too_large(scope, receive, send)
                return

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    async def too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        error = PayloadTooLarge(f"body: larger than {self.limit} bytes (RAG_MAX_BODY_BYTES); send a shorter "
                                "question or conversation")
        await self.reject(error, scope["path"])(scope, receive, send)
