"""The engine's HTTP server: its app factory `create_engine_app`, its error mapping, and `serve_engine`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from types import FrameType

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from rag.engine.catalog import CATALOG
from rag.engine.config import EngineSettings
from rag.engine.routes import get_engine, router
from rag.engine.runner import RunnerBackend, RunnerCrashed, RunnerFailed
from rag.engine.scheduler import LoadFailed, Scheduler, ServerBusy
from rag.engine.schemas import ApiError
from rag.engine.selfcheck import self_check
from rag.engine.service import ClientGone, Engine
from rag.hostcheck import HostCheck, parse_hosts, warn_if_exposed

logger = logging.getLogger(__name__)

BUSY = "server busy, please try again.  maximum pending requests exceeded"


class CountRequests:
    """Counts requests per route for GET /engine/stats; plain ASGI so streaming is untouched.

    Paths that match no route share one counter, so junk requests cannot grow the engine's memory."""

    def __init__(self, app: ASGIApp, paths: set[str]) -> None:
        self.app, self.paths = app, paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (engine := getattr(scope["app"].state, "engine", None)):
            path = scope["path"]
            engine.stats.requests[path if path in self.paths else "(no such route)"] += 1
        await self.app(scope, receive, send)


class BusyFirst:
    """Tests only (RAG_ENGINE_TEST_BUSY=N): the first N model requests get the 503 a full queue gives."""

    MODEL_PATHS = frozenset({"/api/chat", "/api/generate", "/api/embed"})

    def __init__(self, app: ASGIApp, count: int) -> None:
        self.app, self.left = app, count

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.left > 0 and scope["type"] == "http" and scope["path"] in self.MODEL_PATHS:
            self.left -= 1
            scope["app"].state.engine.stats.rejected += 1
            await _error(503, BUSY)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _install_error_handlers(app: FastAPI) -> None:
    async def api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return _error(exc.status, exc.message)

    async def busy(request: Request, exc: Exception) -> Response:
        get_engine(request).stats.rejected += 1
        return _error(503, BUSY)

    async def load_failed(request: Request, exc: Exception) -> Response:
        return _error(500, str(exc))  # as Ollama: the runner's failure, said in its own words

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return _error(exc.status_code, str(exc.detail))

    async def client_gone(request: Request, exc: Exception) -> Response:
        return Response(status_code=499)  # nobody reads it: the client has left

    async def unexpected(request: Request, exc: Exception) -> Response:
        logger.error("unhandled error on %s", request.url.path, exc_info=exc)
        return _error(500, "internal error")

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(ServerBusy, busy)
    app.add_exception_handler(LoadFailed, load_failed)
    app.add_exception_handler(RunnerCrashed, load_failed)
    app.add_exception_handler(RunnerFailed, load_failed)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(ClientGone, client_gone)
    app.add_exception_handler(Exception, unexpected)


def create_engine_app(settings: EngineSettings) -> FastAPI:
    """The engine app; models load on first use and live on app.state.engine until shutdown."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Enough threads for every slot of every model, plus loads and digests.
        executor = ThreadPoolExecutor(settings.num_parallel * len(CATALOG) + 2, thread_name_prefix="engine")
        backend = RunnerBackend(settings)
        scheduler = Scheduler(backend, executor, settings.num_parallel, settings.max_queue)
        app.state.engine = engine = Engine(settings, backend, scheduler, executor)
        expiry = asyncio.create_task(scheduler.run_expiry())
        logger.info(
            "engine ready: %s backend, %s parallel, queue %s",
            backend.name,
            settings.num_parallel,
            settings.max_queue,
        )
        try:
            yield
        finally:
            expiry.cancel()
            engine.cancel_all()
            await asyncio.to_thread(executor.shutdown, wait=True, cancel_futures=True)
            scheduler.close()

    app = FastAPI(title="rag engine", description="Ollama's API on bundled models", lifespan=lifespan)
    if settings.test_busy:
        app.add_middleware(BusyFirst, count=settings.test_busy)
    app.add_middleware(CountRequests, paths={getattr(route, "path", "") for route in router.routes})
    app.add_middleware(HostCheck, allowed_hosts=parse_hosts(settings.allowed_hosts), bind_host=settings.bind[0])
    app.include_router(router)
    _install_error_handlers(app)
    return app


class _Server(uvicorn.Server):
    """Cancels running generations as soon as shutdown starts, so open streams end instead of holding it up."""

    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        super().__init__(config)
        self.app = app

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if engine := getattr(self.app.state, "engine", None):
            engine.cancel_all()
        super().handle_exit(sig, frame)


def serve_engine(settings: EngineSettings) -> None:
    """Run the engine until interrupted (Ctrl-C stops it cleanly).

    Raises SelfCheckFailed, before listening, when the chat model cannot generate on this machine."""
    host, port = settings.bind
    warn_if_exposed("the engine", host, parse_hosts(settings.allowed_hosts), "RAG_ENGINE_ALLOWED_HOSTS")
    if settings.self_check:
        self_check(settings)
    logger.info("engine listening on %s:%s", host, port)
    app = create_engine_app(settings)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=settings.log_level.lower(),
        access_log=settings.log_level == "DEBUG",
        timeout_graceful_shutdown=5,
    )
    _Server(config, app).run()
