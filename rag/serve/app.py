"""The HTTP API: an app factory, thin routes, and the one place where our errors become status codes."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import asdict
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, BaseModel, Field
from pydantic_core import PydanticCustomError
from starlette.exceptions import HTTPException

from ingest.reconcile import reconcile_at_startup
from rag import ollama as ollama_adapter
from rag.answer.pipeline import BLANK, DEBUG_FIELDS, RagPipeline, Source, is_blank
from rag.config import Settings
from rag.errors import BadRequest, HostNotAllowed, RagError
from rag.hostcheck import HostCheck, parse_hosts, refusal, warn_if_exposed
from rag.index.bm25 import KeywordIndex
from rag.index.chroma import ChromaStore
from rag.index.lock import store_lock
from rag.index.tokens import segmenter
from rag.serve.disconnect import CancellingStream, while_connected

log = logging.getLogger(__name__)


# -- request and response models ------------------------------------------------------------------


Mode = Literal["hybrid", "vector", "keyword"]
MODE_HELP = "Retrieval: keywords and vectors fused (hybrid), or one alone. Default RAG_RETRIEVAL_MODE."
DEBUG_HELP = "Give each source its vector, keyword and fused scores and ranks."


def _not_blank(question: str) -> str:
    if is_blank(question):
        raise PydanticCustomError("blank", BLANK)
    return question


Question = Annotated[
    str,
    Field(min_length=1, max_length=4000, description="The question, in any language; not only spaces."),
    AfterValidator(_not_blank),
]


class AskRequest(BaseModel):
    question: Question
    top_k: int | None = Field(default=None, ge=1, le=50, description="Chunks to retrieve.")
    stream: bool = Field(default=False, description="Answer as NDJSON: sources, tokens, then timings.")
    mode: Mode | None = Field(default=None, description=MODE_HELP)
    debug: bool = Field(default=False, description=DEBUG_HELP)


class RetrieveRequest(BaseModel):
    question: Question
    top_k: int | None = Field(default=None, ge=1, le=50)
    mode: Mode | None = Field(default=None, description=MODE_HELP)
    debug: bool = Field(default=False, description=DEBUG_HELP)


class SourceOut(BaseModel):
    n: int
    source: str
    page: int | None
    chunk_id: str
    score: float
    text: str
    start: int | None = None
    end: int | None = None
    # Only with `debug: true`; a rank or score is null when that side did not return the chunk.
    vector_score: float | None = None
    vector_rank: int | None = None
    keyword_score: float | None = None
    keyword_rank: int | None = None
    fused_score: float | None = None


class AnswerWarning(BaseModel):
    code: Literal["sources_left_out", "prompt_truncated"]
    message: str


class AskResponse(BaseModel):
    answer: str
    sources: list[SourceOut]
    model: str
    abstained: bool
    timings_ms: dict[str, float]
    mode: Mode | None = Field(default=None, description="The retrieval mode in effect.")
    warnings: list[AnswerWarning] = Field(
        default_factory=list, description="What the answer may suffer from: sources left out, a prompt cut."
    )


class RetrieveResponse(BaseModel):
    sources: list[SourceOut]
    mode: Mode | None = Field(default=None, description="The retrieval mode in effect.")


class DocumentOut(BaseModel):
    source: str
    chunks: int


class DocumentsResponse(BaseModel):
    documents: list[DocumentOut]
    total_chunks: int


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorBody


ERRORS: dict[int | str, dict[str, Any]] = {
    403: {"model": ErrorResponse, "description": "A Host header this server does not answer to"},
    409: {"model": ErrorResponse, "description": "Embedding model mismatch, or nothing indexed"},
    422: {"model": ErrorResponse, "description": "Bad input"},
    503: {"model": ErrorResponse, "description": "Ollama unreachable, or a model not pulled"},
}


# -- the app ----------------------------------------------------------------------------------------


def create_app(settings: Settings) -> FastAPI:
    """The app; `settings.host` is where it listens (the Host check accepts that name too)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        warn_if_exposed("rag serve", settings.host, allowed_hosts, "RAG_ALLOWED_HOSTS")
        async with AsyncExitStack() as stack:
            if not settings.chroma_host:
                # The embedded store is single-process: serving holds it, so an ingest fails fast.
                stack.enter_context(store_lock(settings, "rag serve"))
            store = ChromaStore.open(settings)
            # Chunks a killed ingest wrote but no file owns are removed before anything is served.
            if removed := reconcile_at_startup(settings, store):
                log.warning("removed %s chunks an interrupted ingest had left", removed)
            keywords = KeywordIndex.open(settings)  # once, here: never rebuilt per query
            if keywords.available:
                segmenter()  # jieba's dictionary loads now, not on the first Chinese question
            app.state.settings = settings
            app.state.store = store
            app.state.pipeline = RagPipeline(
                settings, store, ollama_adapter.build_llm(settings), ollama_adapter.build_embed_model(settings),
                keywords,
            )
            yield

    app = FastAPI(
        title="ollama-rag",
        summary="Questions answered from your documents, with numbered sources, by Ollama models.",
        version="0.1.0",
        lifespan=lifespan,
    )
    allowed_hosts = parse_hosts(settings.allowed_hosts)
    app.add_middleware(
        HostCheck, allowed_hosts=allowed_hosts, bind_host=settings.host,
        reject=lambda host: error_response(HostNotAllowed(refusal(host, "RAG_ALLOWED_HOSTS"))),
    )
    _install_error_handlers(app)
    _add_routes(app)
    return app


def get_pipeline(request: Request) -> RagPipeline:
    pipeline: RagPipeline = request.app.state.pipeline
    return pipeline


Pipeline = Annotated[RagPipeline, Depends(get_pipeline)]


def _sources(sources: list[Source], debug: bool = False) -> list[dict[str, Any]]:
    out = [asdict(s) for s in sources]
    if not debug:  # left out, not null: the response reads as it did before hybrid retrieval
        for item in out:
            for key in DEBUG_FIELDS:
                del item[key]
    return out


def _line(event: dict[str, Any]) -> bytes:
    return (json.dumps(event, ensure_ascii=False) + "\n").encode()


async def _ndjson(
    first: dict[str, Any], events: AsyncGenerator[dict[str, Any], None], debug: bool
) -> AsyncIterator[bytes]:
    try:
        event: dict[str, Any] | None = first
        while event is not None:
            if event["type"] == "sources":
                event = {**event, "sources": _sources(event["sources"], debug)}
            yield _line(event)
            event = await anext(events, None)
    except RagError as exc:
        # Headers are gone already: the error travels as the stream's last record.
        yield _line({"type": "error", "error": {"code": exc.code, "message": exc.message}})
    finally:
        await events.aclose()  # closes the request to Ollama when the stream ends early


def _add_routes(app: FastAPI) -> None:
    @app.post("/ask", response_model=AskResponse, response_model_exclude_unset=True, responses=ERRORS)
    async def ask(body: AskRequest, request: Request, pipeline: Pipeline) -> Any:
        """Answer from the indexed documents, citing numbered sources. `stream: true` gives NDJSON.

        A client that disconnects cancels its retrieval and generation, down to the request to Ollama.
        """
        if body.stream:
            events = pipeline.aask_stream(body.question, body.top_k, mode=body.mode)
            first = await while_connected(request, anext(events))  # retrieval errors get their status code
            return CancellingStream(_ndjson(first, events, body.debug), media_type="application/x-ndjson")
        answer = await while_connected(request, pipeline.aask(body.question, body.top_k, mode=body.mode))
        return {**answer.to_dict(), "sources": _sources(answer.sources, body.debug)}

    @app.post("/retrieve", response_model=RetrieveResponse, response_model_exclude_unset=True, responses=ERRORS)
    async def retrieve(body: RetrieveRequest, request: Request, pipeline: Pipeline) -> Any:
        """The chunks `/ask` would use, with their scores; no generation. `debug: true` shows both sides."""
        mode = pipeline.mode_for(body.mode)
        found = await while_connected(request, pipeline.aretrieve(body.question, body.top_k, mode))
        return {"sources": _sources(found, body.debug), "mode": mode}

    @app.get("/documents", response_model=DocumentsResponse, responses=ERRORS)
    def documents(pipeline: Pipeline) -> Any:
        """What is indexed, per source file, with chunk counts."""
        counts = pipeline.store.sources() if pipeline.store.exists() else {}
        docs = [{"source": s, "chunks": n} for s, n in sorted(counts.items())]
        return {"documents": docs, "total_chunks": sum(counts.values())}

    @app.get("/health")
    def health(pipeline: Pipeline) -> JSONResponse:
        """Ollama reachable (asked with RAG_HEALTH_TIMEOUT), both models present, store readable; else 503."""
        report = health_report(pipeline)
        return JSONResponse(report, status_code=200 if report["status"] == "ok" else 503)


def health_report(pipeline: RagPipeline) -> dict[str, Any]:
    settings = pipeline.settings
    ollama: dict[str, Any] = {"url": settings.ollama_url, "reachable": False}
    try:
        missing = ollama_adapter.missing_models(settings)
        ollama.update(reachable=True, models={
            m: m not in missing for m in (settings.chat_model, settings.embed_model)
        })
        if missing:
            ollama["hint"] = "; ".join(f"ollama pull {m}" for m in missing)
        if failure := ollama_adapter.generation_failure(settings):
            ollama["generation_error"] = failure
    except RagError as exc:
        ollama["error"] = exc.message
        missing = []
    store: dict[str, Any] = {"readable": False}
    try:
        store.update(readable=True, chunks=pipeline.store.count())
        if pipeline.store.exists():
            store["embed_model"], store["embed_dim"] = pipeline.store.indexed_model()
    except RagError as exc:
        store["error"] = exc.message
    ok = ollama["reachable"] and not missing and "generation_error" not in ollama and store["readable"]
    # A keyword index that is out does not fail the check: questions are still answered, by vectors.
    keyword = {**pipeline.keywords.health(), "mode": pipeline.mode_for()}
    return {"status": "ok" if ok else "degraded", "ollama": ollama, "store": store, "keyword": keyword}


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def error_response(exc: RagError) -> JSONResponse:
    """Our errors as HTTP: the status and code each error class carries, in the documented shape."""
    return _error(exc.status, exc.code, exc.message)


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
        return error_response(exc)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        response = error_response(_http_error(exc))
        response.headers.update(exc.headers or {})  # e.g. Allow on a 405
        return response

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
            problems.append(f"{where}: {err.get('msg', 'invalid')}")
        return error_response(BadRequest("; ".join(problems)))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return _error(500, "internal_error", "internal error; the server log has the details")
