"""The web page: one static HTML page and its script, no build step and nothing from a CDN (used offline)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from rag.errors import NotFound

WEB = Path(__file__).with_name("web")
# The only files served: a name is looked up here, never joined to a path from the request.
FILES = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}

router = APIRouter(include_in_schema=False)


@router.get("/")
def page() -> FileResponse:
    return FileResponse(WEB / "index.html", media_type="text/html; charset=utf-8")


@router.get("/ui/{name}")
def asset(name: str) -> FileResponse:
    if name not in FILES:
        raise NotFound(f"/ui/{name}: no such file; the page uses /ui/app.js and /ui/style.css")
    return FileResponse(WEB / name, media_type=FILES[name])
