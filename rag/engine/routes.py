"""Ollama's endpoints: thin handlers that parse the body, call the engine and shape Ollama's answers."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

from rag.engine.catalog import CATALOG, resolve
from rag.engine.jobs import DONE, FAILED, PIECE
from rag.engine.protocol import GenerationStats
from rag.engine.runner import RunnerCrashed, RunnerFailed
from rag.engine.schemas import (
    ApiError,
    ChatRequest,
    EmbeddingsRequest,
    EmbedRequest,
    GenerateRequest,
    PullRequest,
    ShowRequest,
    parse_body,
)
from rag.engine.service import Engine, Run

logger = logging.getLogger(__name__)

OLLAMA_VERSION = "0.9.6"  # the Ollama API level this engine follows
NDJSON = "application/x-ndjson"
CANCELLED = "generation cancelled: the engine is shutting down"


class FastJSONResponse(JSONResponse):
    """orjson writes numpy float32 rows directly, as Ollama writes float32: ~20x faster for embeddings."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


def get_engine(request: Request) -> Engine:
    return request.app.state.engine


EngineDep = Annotated[Engine, Depends(get_engine)]
router = APIRouter()


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _stamp(model: str) -> dict[str, Any]:
    return {"model": model, "created_at": _now()}


def _line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def _unsupported(model: str, **features: bool) -> None:
    for feature, asked in features.items():
        if asked:
            raise ApiError(400, f'"{model}" does not support {feature}')


@router.api_route("/", methods=["GET", "HEAD"], response_class=PlainTextResponse)
async def root() -> str:
    return "Ollama is running"


@router.get("/api/version")
async def version() -> dict[str, str]:
    return {"version": OLLAMA_VERSION}


@router.get("/engine/stats")
async def engine_stats(engine: EngineDep) -> dict[str, Any]:
    runners = [
        {"model": name, "pid": getattr(instance, "pid", None), "num_ctx": loaded.n_ctx}
        for name, loaded in sorted(engine.scheduler.loaded.items())
        for instance in loaded.instances
    ]
    return {
        **engine.stats.snapshot(),
        "running": sum(loaded.active for loaded in engine.scheduler.loaded.values()),
        "queued": engine.scheduler.waiting,
        "loaded": sorted(engine.scheduler.loaded),
        "runners": runners,
        "backend": engine.backend.name,
    }


@router.get("/api/tags")
async def tags(engine: EngineDep) -> dict[str, Any]:
    return {"models": [await asyncio.to_thread(engine.describe, spec) for spec in CATALOG.values()]}


@router.get("/api/ps")
async def ps(engine: EngineDep) -> dict[str, Any]:
    models = []
    for runner in list(engine.scheduler.loaded.values()):
        entry = await asyncio.to_thread(engine.describe, runner.spec)
        entry.pop("modified_at")
        expires = runner.expires_at.isoformat().replace("+00:00", "Z")
        models.append({**entry, "expires_at": expires, "size_vram": 0, "context_length": runner.n_ctx})
    return {"models": models}


@router.post("/api/show")
async def show(request: Request, engine: EngineDep) -> dict[str, Any]:
    req = parse_body(await request.body(), ShowRequest)
    spec = engine.model(req.model)
    return await asyncio.to_thread(engine.show, spec)


@router.post("/api/pull", response_model=None)
async def pull(request: Request, engine: EngineDep) -> dict[str, str] | StreamingResponse:
    req = parse_body(await request.body(), PullRequest)
    spec = resolve(req.model)
    if spec is None:
        bundled = ", ".join(CATALOG)
        raise ApiError(
            404,
            f'pull model manifest: "{req.model}" cannot be pulled: this engine has no network '
            f"access and serves only its bundled models ({bundled})",
        )
    if not req.stream:
        return {"status": "success"}
    entry = await asyncio.to_thread(engine.describe, spec)
    layer = {"digest": f"sha256:{entry['digest']}", "total": entry["size"], "completed": entry["size"]}
    steps = [
        {"status": "pulling manifest"},
        {"status": f"pulling {entry['digest'][:12]}", **layer},
        {"status": "verifying sha256 digest"},
        {"status": "writing manifest"},
        {"status": "success"},
    ]
    return StreamingResponse(iter(_line(s) for s in steps), media_type=NDJSON)


@router.post("/api/chat")
async def chat(request: Request, engine: EngineDep) -> Response:
    req = parse_body(await request.body(), ChatRequest)
    spec = engine.model(req.model, "chat")
    images = any(m.images for m in req.messages)
    _unsupported(req.model, tools=bool(req.tools), thinking=bool(req.think), images=images)
    keep_alive = engine.keep_alive(req.keep_alive)
    if not req.messages:
        reason = await engine.load_only(spec, keep_alive)
        empty = {"role": "assistant", "content": ""}
        return JSONResponse({**_stamp(req.model), "message": empty, "done_reason": reason, "done": True})
    messages = [{"role": m.role, "content": m.content or ""} for m in req.messages]
    run = await engine.generate(
        spec, req.options, req.format, keep_alive, lambda m: m.render(messages), request.is_disconnected
    )
    return await _respond(request, run, req.model, req.stream, _chat_shape)


@router.post("/api/generate")
async def generate(request: Request, engine: EngineDep) -> Response:
    req = parse_body(await request.body(), GenerateRequest)
    spec = engine.model(req.model, "chat")
    _unsupported(req.model, insert=bool(req.suffix), thinking=bool(req.think), images=bool(req.images))
    keep_alive = engine.keep_alive(req.keep_alive)
    if not req.prompt:
        reason = await engine.load_only(spec, keep_alive)
        return JSONResponse({**_stamp(req.model), "response": "", "done_reason": reason, "done": True})
    system = [{"role": "system", "content": req.system}] if req.system else []
    messages = [*system, {"role": "user", "content": req.prompt}]
    prompt = (lambda m: req.prompt) if req.raw else (lambda m: m.render(messages))
    run = await engine.generate(spec, req.options, req.format, keep_alive, prompt, request.is_disconnected)
    return await _respond(request, run, req.model, req.stream, _generate_shape)


@router.post("/api/embed")
async def embed(request: Request, engine: EngineDep) -> Response:
    started = time.perf_counter_ns()
    req = parse_body(await request.body(), EmbedRequest)
    spec = engine.model(req.model, "embedding")
    texts = _texts(req.input)
    keep_alive = engine.keep_alive(req.keep_alive)
    dims = req.dimensions
    if dims is not None and not 1 <= dims <= spec.embedding_length:
        raise ApiError(400, f"dimensions must be between 1 and {spec.embedding_length}")
    if not texts:  # as Ollama: an empty input only loads the model
        await engine.load_only(spec, keep_alive)
        return FastJSONResponse({"model": req.model, "embeddings": []})
    embedded, load_ns = await engine.embed(spec, texts, req.truncate, keep_alive)
    vectors = embedded.vectors
    if dims is not None and dims < vectors.shape[1]:
        vectors = vectors[:, :dims]
        vectors = vectors / (vectors**2).sum(axis=1, keepdims=True) ** 0.5
    return FastJSONResponse(
        {
            "model": req.model,
            "embeddings": vectors,
            "total_duration": time.perf_counter_ns() - started,
            "load_duration": load_ns,
            "prompt_eval_count": sum(embedded.token_counts),
        }
    )


@router.post("/api/embeddings")
async def embeddings(request: Request, engine: EngineDep) -> Response:
    req = parse_body(await request.body(), EmbeddingsRequest)
    spec = engine.model(req.model, "embedding")
    keep_alive = engine.keep_alive(req.keep_alive)
    if not req.prompt:
        return FastJSONResponse({"embedding": []})
    embedded, _ = await engine.embed(spec, [req.prompt], True, keep_alive)
    return FastJSONResponse({"embedding": embedded.vectors[0]})


def _texts(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    raise ApiError(400, "invalid input type: input must be a string or a list of strings")


def _chat_shape(text: str) -> dict[str, Any]:
    return {"message": {"role": "assistant", "content": text}}


def _generate_shape(text: str) -> dict[str, Any]:
    return {"response": text}


Shape = Callable[[str], dict[str, Any]]


async def _respond(request: Request, run: Run, model: str, stream: bool, shape: Shape) -> Response:
    if stream:
        return StreamingResponse(_stream(run, model, shape), media_type=NDJSON)
    text, stats = await _collect(request, run)
    if stats is None:  # the client left; nobody reads this
        return Response(status_code=499)
    if stats.done_reason == "cancelled":
        raise ApiError(503, CANCELLED)
    if error := run.format_error(text, stats):
        raise ApiError(500, error)
    final = {"done_reason": stats.done_reason, "done": True, **run.counters(stats)}
    return JSONResponse({**_stamp(model), **shape(text), **final})


async def _stream(run: Run, model: str, shape: Shape) -> AsyncIterator[bytes]:
    """NDJSON lines as tokens arrive; a mid-stream failure ends with an {"error": ...} line, as Ollama's."""
    parts: list[str] = []
    try:
        while True:
            kind, value = await run.job.next()
            if kind == PIECE:
                parts.append(value)
                yield _line({**_stamp(model), **shape(value), "done": False})
                continue
            if kind == FAILED:
                if isinstance(value, RunnerCrashed | RunnerFailed):
                    yield _line({"error": str(value)})  # already logged where it happened
                else:
                    logger.error("generation failed", exc_info=value)
                    yield _line({"error": "generation failed"})
            elif value.done_reason == "cancelled":
                yield _line({"error": CANCELLED})
            elif error := run.format_error("".join(parts), value):
                yield _line({"error": error})
            else:
                final = {"done_reason": value.done_reason, "done": True, **run.counters(value)}
                yield _line({**_stamp(model), **shape(""), **final})
            return
    finally:
        run.job.cancel.set()  # the client may have gone: stop generating


async def _collect(request: Request, run: Run) -> tuple[str, GenerationStats | None]:
    parts: list[str] = []
    checked = time.monotonic()
    while True:
        try:
            kind, value = await asyncio.wait_for(run.job.next(), timeout=0.5)
        except TimeoutError:
            kind, value = "", None
        if time.monotonic() - checked >= 0.5:  # a client gone while we generate: stop, as when streaming
            checked = time.monotonic()
            if await request.is_disconnected():
                run.job.cancel.set()
                return "", None
        if kind == PIECE:
            parts.append(value)
        elif kind == FAILED:
            raise value
        elif kind == DONE:
            return "".join(parts), value
