"""The routes: each handler validates, calls the pipeline through a typed dependency, and shapes the reply."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from rag import ollama as ollama_adapter
from rag.answer.documents import page_text
from rag.answer.models import Source
from rag.answer.pipeline import RagPipeline
from rag.errors import NotFound, RagError
from rag.serve.disconnect import CancellingStream, while_connected
from rag.serve.observability import answered, observed
from rag.serve.schemas import (
    ERRORS,
    AskRequest,
    AskResponse,
    DocumentsResponse,
    PageTextResponse,
    RetrieveRequest,
    RetrieveResponse,
)

router = APIRouter()


def get_pipeline(request: Request) -> RagPipeline:
    pipeline: RagPipeline = request.app.state.pipeline
    return pipeline


Pipeline = Annotated[RagPipeline, Depends(get_pipeline)]


@router.post("/ask", response_model=AskResponse, response_model_exclude_unset=True, responses=ERRORS)
async def ask(body: AskRequest, request: Request, pipeline: Pipeline) -> Any:
    """Answer from the indexed documents, citing numbered sources. `stream: true` gives NDJSON.

    A client that disconnects cancels its retrieval and generation, down to the request to Ollama.
    """
    question, history = body.turns()
    if body.stream:
        events = observed(request, pipeline.aask_stream(question, body.top_k, body.mode, history, body.answer_mode))
        first = await while_connected(request, anext(events))  # retrieval errors get their status code
        return CancellingStream(_ndjson(first, events, body.debug), media_type="application/x-ndjson")
    asked = pipeline.aask(question, body.top_k, body.mode, history, body.answer_mode)
    answer = await while_connected(request, asked)
    answered(request, answer.to_dict())
    return {**answer.to_dict(), "sources": _public(answer.sources, body.debug)}


@router.post("/retrieve", response_model=RetrieveResponse, response_model_exclude_unset=True, responses=ERRORS)
async def retrieve(body: RetrieveRequest, request: Request, pipeline: Pipeline) -> Any:
    """The chunks `/ask` would use, with their scores; no generation. `debug: true` shows both sides."""
    mode = pipeline.mode_for(body.mode)
    found = await while_connected(request, pipeline.aretrieve(body.question, body.top_k, mode))
    return {"sources": _public(found, body.debug), "mode": mode}


@router.get("/documents", response_model=DocumentsResponse, responses=ERRORS)
def documents(pipeline: Pipeline) -> Any:
    """What is indexed, per source file, with chunk counts."""
    counts = pipeline.store.sources() if pipeline.store.exists() else {}
    docs = [{"source": s, "chunks": n} for s, n in sorted(counts.items())]
    return {"documents": docs, "total_chunks": sum(counts.values())}


@router.get("/documents/text", response_model=PageTextResponse, responses=ERRORS)
def document_text(pipeline: Pipeline, source: str, page: int | None = None) -> Any:
    """One page of an indexed file as it was extracted (rebuilt from its chunks), with each chunk's offsets:
    what a citation's `start`/`end` index. Read from the index, never from the disk."""
    found = page_text(source, page, pipeline.store.records_of(source))
    if found is None:
        where = f" page {page}" if page is not None else ""
        raise NotFound(f"source: nothing indexed for '{source}'{where}; GET /documents lists what is")
    chunks = [{"chunk_id": cid, "start": start, "end": end} for cid, start, end in found.chunks]
    return {"source": found.source, "page": found.page, "text": found.text, "chunks": chunks}


@router.get("/health")
def health(pipeline: Pipeline) -> JSONResponse:
    """Ollama reachable (asked with RAG_HEALTH_TIMEOUT), both models present, store readable; else 503."""
    report = health_report(pipeline)
    return JSONResponse(report, status_code=200 if report["status"] == "ok" else 503)


def _public(sources: list[Source], debug: bool) -> list[dict[str, Any]]:
    # The debug fields are left out, not null: the response reads as it did before hybrid retrieval.
    return [s.public(debug) for s in sources]


def _line(event: dict[str, Any]) -> bytes:
    return (json.dumps(event, ensure_ascii=False) + "\n").encode()


async def _ndjson(
    first: dict[str, Any], events: AsyncGenerator[dict[str, Any], None], debug: bool
) -> AsyncIterator[bytes]:
    try:
        event: dict[str, Any] | None = first
        while event is not None:
            if event["type"] == "sources":
                event = {**event, "sources": _public(event["sources"], debug)}
            yield _line(event)
            event = await anext(events, None)
    except RagError as exc:
        # Headers are gone already: the error travels as the stream's last record.
        yield _line({"type": "error", "error": {"code": exc.code, "message": exc.message}})
    finally:
        await events.aclose()  # closes the request to Ollama when the stream ends early


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
