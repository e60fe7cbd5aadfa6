"""Running rag serve for a team: the middlewares around every route (keys, CORS, size limit, request ids,
request counts), the operator's routes (/livez, /readyz, /metrics, /sync), and what they need while serving."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.middleware.cors import CORSMiddleware

from rag import ollama as ollama_adapter
from rag.config import Settings
from rag.hostcheck import parse_hosts
from rag.index.chroma import ChromaStore
from rag.serve.auth import Reject, RequireKey
from rag.serve.limits import BodyLimit
from rag.serve.observability import HEADER, CountRequests, Metrics, RequestId
from rag.serve.routes import get_pipeline, health_report
from rag.serve.sync_jobs import SyncJobs

router = APIRouter()


def guard(app: FastAPI, settings: Settings, reject: Reject) -> None:
    """Inside the Host check: CORS (answers preflights before the key check), API keys, the body limit."""
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes, reject=reject)
    app.add_middleware(RequireKey, settings=settings, reject=reject)
    if origins := parse_hosts(settings.cors_origins):  # none by default: browsers on other origins are refused
        app.add_middleware(
            CORSMiddleware, allow_origins=origins, allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", HEADER], expose_headers=[HEADER, "Retry-After"],
        )


def observe(app: FastAPI, settings: Settings) -> None:
    """Outermost: every request, refused ones included, gets its id and is counted."""
    app.state.metrics = Metrics(settings)
    app.add_middleware(CountRequests, metrics=app.state.metrics)
    app.add_middleware(RequestId)


@asynccontextmanager
async def operations(app: FastAPI, settings: Settings, store: ChromaStore) -> AsyncIterator[None]:
    """For the lifespan: Ollama's retries and errors counted, the sync jobs, and --watch."""
    metrics: Metrics = app.state.metrics
    pool = ollama_adapter.host_pool(settings)
    pool.listeners.append(metrics.ollama_event)
    app.state.sync_jobs = jobs = SyncJobs(settings, store, metrics)
    stop = asyncio.Event()
    watcher = asyncio.create_task(jobs.watch(stop)) if settings.watch and settings.docs_dir else None
    try:
        yield
    finally:
        stop.set()
        if watcher is not None:
            await watcher
        await jobs.close()
        pool.listeners.remove(metrics.ollama_event)


@router.get("/livez")
def livez() -> dict[str, str]:
    """The process is up. No dependency is checked (an Ollama outage must not get the container restarted);
    no key needed."""
    return {"status": "alive"}


@router.get("/readyz")
def readyz(request: Request) -> JSONResponse:
    """Ready to answer: Ollama reachable, both models present, the store readable; else 503 with the reason."""
    report = health_report(get_pipeline(request))
    if report["status"] == "ok":
        return JSONResponse({"status": "ready"})
    return JSONResponse({"status": "not_ready", "reason": _reason(report)}, status_code=503)


def _reason(report: dict[str, Any]) -> str:
    ollama, store = report["ollama"], report["store"]
    reasons = []
    if not ollama["reachable"]:
        reasons.append(ollama.get("error", "Ollama is not reachable"))
    if hint := ollama.get("hint"):
        reasons.append(f"models missing on Ollama; run: {hint}")
    if failure := ollama.get("generation_error"):
        reasons.append(f"the chat model cannot generate: {failure}")
    if not store["readable"]:
        reasons.append(store.get("error", "the store is not readable"))
    return "; ".join(reasons) or "not ready"


@router.get("/metrics")
def metrics(request: Request) -> Response:
    """Prometheus metrics: requests by route and status, /ask stage latencies, tokens, Ollama errors and
    retries, what is indexed, syncs run."""
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.post("/sync", status_code=202)
async def start_sync(request: Request) -> dict[str, Any]:
    """Sync RAG_DOCS_DIR in the background (admin key); 409 while another sync runs. GET /sync/{id} follows it."""
    job = request.app.state.sync_jobs.start("api")
    return {"id": job.id, "state": job.state, "folder": job.folder, "url": f"/sync/{job.id}"}


@router.get("/sync/{job_id}")
def sync_status(job_id: str, request: Request) -> dict[str, Any]:
    """A sync's per-file progress, and its summary once done."""
    public: dict[str, Any] = request.app.state.sync_jobs.get(job_id).public()
    return public
