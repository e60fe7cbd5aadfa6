"""Asking questions the way `/ask` answers them: in-process, or over HTTP from a running `rag serve`.

Used by `rag ask` and `rag eval run`. An asker maps a question to /ask's JSON answer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import httpx

from rag.config import Settings
from rag.errors import BadRequest, OllamaError, RagError

Ask = Callable[[str], dict[str, Any]]


@contextmanager
def local_asker(settings: Settings, top_k: int | None, mode: str | None, who: str) -> Iterator[Ask]:
    """The in-process pipeline, holding the store lock (named after `who`) while it is open."""
    from rag.answer.pipeline import RagPipeline
    from rag.index.lock import store_lock

    with store_lock(settings, who) if not settings.chroma_host else nullcontext():
        pipeline = RagPipeline.open(settings)
        yield lambda question: pipeline.ask(question, top_k, mode=mode).to_dict()


@contextmanager
def http_asker(url: str, top_k: int | None, mode: str | None, timeout: float, key: str = "") -> Iterator[Ask]:
    """POST /ask on a running `rag serve`, with `key` as the API key when it asks for one (RAG_API_KEYS)."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    with httpx.Client(base_url=url.rstrip("/"), timeout=timeout, headers=headers) as client:
        yield lambda question: _post_ask(client, {"question": question, "top_k": top_k, "mode": mode})


def client_key(settings: Settings) -> str:
    """The key this machine sends to a rag serve: one of RAG_API_KEYS (RAG_API_KEYS_FILE), else an admin key."""
    keys = sorted(settings.key_set() - settings.key_set(admin=True)) or sorted(settings.key_set())
    return keys[0] if keys else ""


def _post_ask(client: httpx.Client, payload: dict[str, Any]) -> dict[str, Any]:
    try:
        response = client.post("/ask", json=payload)
    except httpx.HTTPError as exc:
        raise RagError(f"cannot reach rag serve at {client.base_url}: {exc}") from exc
    try:
        body: dict[str, Any] = response.json()
    except ValueError:
        raise RagError(f"rag serve at {client.base_url} answered {response.status_code}: "
                       f"{response.text[:200]}") from None
    if response.status_code != 200:
        error = body.get("error", {}) if isinstance(body, dict) else {}
        message = f"rag serve answered {response.status_code}: {error.get('message', response.text[:200])}"
        # 422: this question was refused; 502: Ollama failed on this request. Both concern this question only.
        raise {422: BadRequest, 502: OllamaError}.get(response.status_code, RagError)(message)
    return body
