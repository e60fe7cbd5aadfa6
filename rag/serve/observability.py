"""What an operator sees of rag serve: the X-Request-ID of every request (returned, and on every log line made
for it) and the Prometheus metrics behind GET /metrics."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncGenerator
from typing import Any

from fastapi import Request
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ingest.manifest import Manifest
from rag.config import Settings
from rag.console import request_id

HEADER = "X-Request-ID"
# A client's id is taken when it is a plausible id (a proxy's UUID, a trace id); anything else is replaced,
# as it goes into logs verbatim.
VALID_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")
STAGES = ("embed_question", "retrieve", "generate")
UNMATCHED = "(no route)"  # one label for every path that matches no route: junk cannot grow the metrics


class RequestId:
    """ASGI middleware: the request's id from X-Request-ID, or a new one; set for logging, sent back."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v.decode("latin-1") for k, v in scope["headers"] if k.lower() == b"x-request-id"), "")
        rid = given if VALID_ID.fullmatch(given) else uuid.uuid4().hex

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)[HEADER] = rid
            await send(message)

        token = request_id.set(rid)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id.reset(token)


class Metrics:
    """The service's metrics, in a registry of its own (one per app: tests build many)."""

    def __init__(self, settings: Settings) -> None:
        self.registry = r = CollectorRegistry()
        self.requests = Counter("rag_http_requests", "HTTP requests by route and status.",
                                ["method", "route", "status"], registry=r)
        self.stage_seconds = Histogram(
            "rag_ask_stage_seconds", "Time /ask spends per stage: embedding the question, retrieving "
            "(embedding included), generating.", ["stage"], registry=r,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
        )
        self.tokens = Counter("rag_generated_tokens", "Tokens the chat model generated for answers.", registry=r)
        self.ollama_errors = Counter("rag_ollama_errors", "Ollama calls that failed, by kind.", ["kind"], registry=r)
        self.ollama_retries = Counter("rag_ollama_retries", "Ollama calls retried, by cause.", ["kind"], registry=r)
        self.ingest_runs = Counter("rag_ingest_runs", "Syncs run by this server, by trigger.", ["trigger"],
                                   registry=r)
        self.ingest_failures = Counter("rag_ingest_failures", "Syncs that stopped on an error.", registry=r)
        self.ingest_file_failures = Counter("rag_ingest_file_failures", "Files a sync could not ingest.", registry=r)
        chunks = Gauge("rag_indexed_chunks", "Chunks in the index (from the manifest).", registry=r)
        documents = Gauge("rag_indexed_documents", "Files in the index (from the manifest).", registry=r)
        # Read when scraped, so an ingest by another process (a Chroma server) shows too.
        chunks.set_function(lambda: sum(len(e.chunk_ids) for e in Manifest.load(settings.manifest_path).files.values()))
        documents.set_function(lambda: len(Manifest.load(settings.manifest_path).files))

    def ollama_event(self, event: str, kind: str, value: float) -> None:
        """A rag.ollama HostPool listener: failed calls, retries, and question embeddings timed."""
        if event == "error":
            self.ollama_errors.labels(kind).inc()
        elif event == "retry":
            self.ollama_retries.labels(kind).inc()
        elif event == "embed_question":
            self.stage_seconds.labels("embed_question").observe(value)

    def answered(self, answer: dict[str, Any]) -> None:
        """An /ask answer (or its stream's done event): its stage timings and generated tokens."""
        timings = answer.get("timings_ms") or {}
        for stage in ("retrieve", "generate"):
            if stage in timings:
                self.stage_seconds.labels(stage).observe(timings[stage] / 1000)
        usage = answer.get("usage") or {}
        self.tokens.inc(int(usage.get("completion_tokens", 0) or 0))


class CountRequests:
    """ASGI middleware: counts each request under its route's template (/sync/{job_id}, not the id) and status.

    A request refused before routing (a 401) counts under its path when that is a route's path."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics
        self.paths: set[str] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # what the client gets when the app raises before answering

        async def send_counted(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_counted)
        finally:
            self.metrics.requests.labels(scope["method"], self.route(scope), str(status)).inc()

    def route(self, scope: Scope) -> str:
        if (route := getattr(scope.get("route"), "path", None)) is not None:
            return str(route)
        if self.paths is None:  # the documented paths: a refused request is counted under its route's
            self.paths = set(scope["app"].openapi()["paths"])
        return str(scope["path"]) if scope["path"] in self.paths else UNMATCHED


def answered(request: Request, answer: dict[str, Any]) -> None:
    """Count an /ask answer in /metrics."""
    request.app.state.metrics.answered(answer)


async def observed(
    request: Request, events: AsyncGenerator[dict[str, Any], None]
) -> AsyncGenerator[dict[str, Any], None]:
    """A streamed answer's events, passed on; its done event is counted as an answer is."""
    try:
        async for event in events:
            if event.get("type") == "done":
                answered(request, event)
            yield event
    finally:
        await events.aclose()
