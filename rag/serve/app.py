"""The HTTP service: the app factory, its lifespan, and the one place where our errors become status codes."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from ingest.reconcile import reconcile_at_startup
from rag.answer.pipeline import RagPipeline
from rag.config import Settings, format_host_url
from rag.errors import BadRequest, HostNotAllowed, RagError
from rag.hostcheck import WILDCARD_BINDS, HostCheck, parse_hosts, refusal, warn_if_exposed
from rag.index.chroma import ChromaStore
from rag.index.lock import store_lock
from rag.serve import ollama_api, openai_api, web
from rag.serve.auth import refuse_open_bind
from rag.serve.ops import guard, observe, operations
from rag.serve.ops import router as ops_router
from rag.serve.routes import router

log = logging.getLogger(__name__)


def create_app(settings: Settings) -> FastAPI:
    """The app; `settings.host` is where it listens (the Host check accepts that name too).

    Raises ExposedWithoutKeys when that is beyond loopback with no API key (see rag.serve.auth)."""
    refuse_open_bind(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not settings.key_set():
            warn_if_exposed("rag serve", settings.host, allowed_hosts, "RAG_ALLOWED_HOSTS")
        async with AsyncExitStack() as stack:
            if not settings.chroma_host:
                # The embedded store is single-process: serving holds it, so an ingest fails fast; the
                # message names our address, so that ingest can hand its job to us (--via-server).
                stack.enter_context(store_lock(settings, f"rag serve at {_own_url(settings)}"))
            store = ChromaStore.open(settings)
            # Chunks a killed ingest wrote but no file owns are removed before anything is served.
            if removed := reconcile_at_startup(settings, store):
                log.warning("removed %s chunks an interrupted ingest had left", removed)
            app.state.settings = settings
            app.state.store = store
            app.state.pipeline = RagPipeline.open(settings, store)
            await stack.enter_async_context(operations(app, settings, store))
            yield

    app = FastAPI(
        title="ollama-rag",
        summary="Questions answered from your documents, with numbered sources, by Ollama models.",
        version="0.1.0",
        lifespan=lifespan,
    )
    allowed_hosts = parse_hosts(settings.allowed_hosts)
    guard(app, settings, error_response)  # API keys, CORS, the body limit
    app.add_middleware(
        HostCheck, allowed_hosts=allowed_hosts, bind_host=settings.host,
        reject=lambda host: error_response(HostNotAllowed(refusal(host, "RAG_ALLOWED_HOSTS"))),
    )
    observe(app, settings)  # request ids and counts, outermost
    _install_error_handlers(app)
    app.include_router(router)
    app.include_router(ops_router)
    app.include_router(openai_api.router)
    app.include_router(ollama_api.router)
    app.include_router(web.router)
    return app


# OpenAI's error types by status, so its clients raise the matching exception class.
_OPENAI_TYPES = {401: "authentication_error", 403: "permission_error", 404: "invalid_request_error",
                 409: "invalid_request_error", 413: "invalid_request_error", 422: "invalid_request_error",
                 429: "rate_limit_error"}


def _error(status: int, code: str, message: str, path: str = "") -> JSONResponse:
    """The error body in the shape the caller's client reads: OpenAI's under /v1/, Ollama's under /api/,
    ours everywhere else."""
    if path.startswith("/v1/"):
        kind = _OPENAI_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
        body: dict[str, object] = {"error": {"message": message, "type": kind, "code": code}}
    elif path.startswith("/api/"):
        body = {"error": message}
    else:
        body = {"error": {"code": code, "message": message}}
    return JSONResponse(body, status_code=status)


def error_response(exc: RagError, path: str = "") -> JSONResponse:
    """Our errors as HTTP: the status and code each error class carries, in the documented shape."""
    response = _error(exc.status, exc.code, exc.message, path)
    if retry_after := getattr(exc, "retry_after", None):  # Ollama busy or down: when to try again
        response.headers["Retry-After"] = str(retry_after)
    return response


def _own_url(settings: Settings) -> str:
    host = settings.host.strip("[]")
    return format_host_url("http", "127.0.0.1" if host in WILDCARD_BINDS else host, settings.port)


def _http_error(exc: HTTPException) -> RagError:
    """Starlette's own errors (no such route, wrong method, an unreadable body) as ours."""
    if exc.status_code == 400:  # FastAPI could not parse the body: bad input, as a JSON syntax error is
        cause = " (not UTF-8)" if isinstance(exc.__cause__, UnicodeDecodeError) else ""
        return BadRequest(f"body: could not be read as JSON{cause}")
    error = RagError(str(exc.detail))
    error.status, error.code = exc.status_code, str(exc.detail).lower().replace(" ", "_")
    return error


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RagError)
    async def rag_error(request: Request, exc: RagError) -> JSONResponse:
        log.warning("%s %s: %s", request.method, request.url.path, exc.message)
        return error_response(exc, request.url.path)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        response = error_response(_http_error(exc), request.url.path)
        response.headers.update(exc.headers or {})  # e.g. Allow on a 405
        return response

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
            problems.append(f"{where}: {err.get('msg', 'invalid')}")
        return error_response(BadRequest("; ".join(problems)), request.url.path)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return _error(500, "internal_error", "internal error; the server log has the details", request.url.path)
