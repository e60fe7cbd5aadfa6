"""The Ollama adapters: the chat model, the embedder, model checks, and Ollama's errors made ours."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import httpx
import ollama
from llama_index.llms.ollama import Ollama

from rag.config import Settings
from rag.errors import InputTooLong as InputTooLong  # re-exported: ingest/sync.py imports it from here
from rag.errors import ModelNotFound, OllamaError, OllamaUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")

# Ollama's wording when an input is longer than the embedding model's context (truncate: false).
TOO_LONG = "input length exceeds"


@contextmanager
def ollama_errors(settings: Settings, model: str, timeout: float | None = None) -> Iterator[None]:
    """Translate what the Ollama client raises into our error tree, with what to do about it.

    `timeout` is the one the call was made with, when it is not RAG_REQUEST_TIMEOUT.
    """
    try:
        yield
    except ollama.ResponseError as exc:
        text = str(exc.error)
        if exc.status_code == 404 and "not found" in text:
            raise ModelNotFound(model, settings.ollama_url) from exc
        if exc.status_code in (400, 413, 500) and TOO_LONG in text:
            raise InputTooLong(text) from exc
        if exc.status_code == 503:
            raise OllamaUnavailable(f"Ollama at {settings.ollama_url} is busy ({text}); retry later") from exc
        raise OllamaError(f"Ollama at {settings.ollama_url} answered {exc.status_code}: {text}") from exc
    except (ConnectionError, httpx.ConnectError) as exc:
        raise OllamaUnavailable(
            f"cannot reach Ollama at {settings.ollama_url}; start it (`ollama serve`, or the bundled "
            "`rag engine`) or set OLLAMA_HOST"
        ) from exc
    except httpx.TimeoutException as exc:
        hint = ("raise RAG_REQUEST_TIMEOUT if the model is still loading" if timeout is None
                else "it is stalled or overloaded")
        raise OllamaUnavailable(
            f"Ollama at {settings.ollama_url} did not answer within {timeout or settings.request_timeout:g}s; {hint}"
        ) from exc
    except httpx.HTTPError as exc:
        raise OllamaUnavailable(f"talking to Ollama at {settings.ollama_url} failed: {exc}") from exc


def call(settings: Settings, model: str, fn: Callable[[], T], timeout: float | None = None) -> T:
    with ollama_errors(settings, model, timeout):
        return fn()


def ollama_client(settings: Settings, timeout: float | None = None) -> ollama.Client:
    """A client for calls that may take long (RAG_REQUEST_TIMEOUT), or for quick ones with `timeout`."""
    return ollama.Client(host=settings.ollama_url, timeout=timeout or settings.request_timeout)



def _transient(exc: Exception, reached: bool) -> bool:
    """Worth retrying: a timeout, a dropped connection, a 503 (busy). A refused connection only once the
    server has answered before: one that never did is down, and that is said at once."""
    if isinstance(exc, ollama.ResponseError):
        return exc.status_code == 503
    if isinstance(exc, ConnectionError | httpx.ConnectError):
        return reached
    return isinstance(exc, httpx.TransportError)


def _reason(exc: Exception) -> str:
    if isinstance(exc, ollama.ResponseError):
        return f"{exc.status_code} {exc.error}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def chat_options(settings: Settings) -> dict[str, Any]:
    """Options sent with every chat call. num_ctx never varies: a change makes Ollama reload the model."""
    return {"num_ctx": settings.num_ctx, "seed": settings.seed, "num_predict": settings.num_predict}


# A small model tends to go on past its answer with an invented next question or a list of sources
# ("\n[1] (file.md) ..."); citations inside the answer stay, as they are not at the start of a line.
ANSWER_STOPS = ["\nQuestion:", "\n问题：", "\nSources:", "\n资料：", "\n["]


# A follow-up's rewrite is one short line: a question, not an answer.
CONDENSE_TOKENS = 64


def build_llm(settings: Settings, num_predict: int | None = None, stops: list[str] | None = None) -> Ollama:
    """The chat model; `num_predict` and `stops` for a call that wants a shorter answer (num_ctx is the same,
    so Ollama does not reload the model)."""
    options = {**chat_options(settings), "stop": stops or ANSWER_STOPS}
    if num_predict is not None:
        options["num_predict"] = num_predict
    return Ollama(
        model=settings.chat_model,
        base_url=settings.ollama_url,
        request_timeout=settings.request_timeout,
        temperature=settings.temperature,
        context_window=settings.num_ctx,
        keep_alive=settings.keep_alive,
        additional_kwargs=options,
    )


class Embedder:
    """The one embedding path, for documents and questions alike, through /api/embed.

    Documents go in batches with truncate: false, so nothing is cut silently.

    A call that fails for a passing reason (a stall, a dropped connection, a busy server) is retried
    RAG_EMBED_RETRIES times, waiting RAG_EMBED_RETRY_BACKOFF seconds and twice as long each next time:
    an ingest outlasts an engine stall of up to backoff * (2**retries - 1) seconds (31 s by default).
    """

    def __init__(self, settings: Settings, client: ollama.Client | None = None) -> None:
        self.settings = settings
        self.model = settings.embed_model
        self._client = client or ollama_client(settings)
        self._aclient: ollama.AsyncClient | None = None  # made on first use by an async caller
        self._reached = False  # whether Ollama has answered this embedder once

    def embed_query(self, question: str) -> list[float]:
        """A question's vector. Ollama truncates an over-long question, as a question is never split."""
        with ollama_errors(self.settings, self.model):
            response = self._client.embed(model=self.model, input=question, keep_alive=self.settings.keep_alive)
        return [float(x) for x in response.embeddings[0]]

    async def aembed_query(self, question: str) -> list[float]:
        """`embed_query` for the event loop: cancelling the awaiting task closes the HTTP request."""
        if self._aclient is None:
            self._aclient = ollama.AsyncClient(host=self.settings.ollama_url, timeout=self.settings.request_timeout)
        with ollama_errors(self.settings, self.model):
            response = await self._aclient.embed(model=self.model, input=question, keep_alive=self.settings.keep_alive)
        return [float(x) for x in response.embeddings[0]]

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Vectors for texts, in order. Raises InputTooLong when the model refuses an input."""
        if not texts:
            return []
        response = call(
            self.settings,
            self.model,
            lambda: self._retrying(
                lambda: self._client.embed(
                    model=self.model, input=list(texts), truncate=False, keep_alive=self.settings.keep_alive
                )
            ),
        )
        vectors = [list(map(float, v)) for v in response.embeddings]
        if len(vectors) != len(texts):
            raise OllamaError(f"Ollama returned {len(vectors)} embeddings for {len(texts)} inputs")
        return vectors

    def dimension(self) -> int:
        return len(self.embed(["dimension probe"])[0])

    def _retrying(self, fn: Callable[[], T]) -> T:
        retries, backoff = self.settings.embed_retries, self.settings.embed_retry_backoff
        for attempt in range(retries + 1):
            try:
                result = fn()
            except (ollama.ResponseError, ConnectionError, httpx.TransportError) as exc:
                if attempt == retries or not _transient(exc, self._reached):
                    raise
                delay = backoff * 2**attempt
                log.warning("embedding at %s failed (%s); retry %s of %s in %.1fs",
                            self.settings.ollama_url, _reason(exc), attempt + 1, retries, delay)
                time.sleep(delay)
            else:
                self._reached = True
                return result
        raise AssertionError("unreachable: the last attempt returns or raises")


def build_embedder(settings: Settings) -> Embedder:
    return Embedder(settings)




def available_models(settings: Settings) -> set[str]:
    """The models Ollama lists, asked with the short RAG_HEALTH_TIMEOUT: a stalled server is reported fast."""
    client = ollama_client(settings, settings.health_timeout)
    listed = call(settings, settings.chat_model, client.list, settings.health_timeout)
    names: set[str] = set()
    for m in listed.models:
        name = m.model or ""
        names.add(name)
        if name.endswith(":latest"):
            names.add(name.removesuffix(":latest"))
    return names


def missing_models(settings: Settings) -> list[str]:
    """The configured models Ollama does not have; raises OllamaUnavailable when it is down."""
    have = available_models(settings)
    wanted = [settings.chat_model, settings.embed_model]
    return [m for m in wanted if m not in have and f"{m}:latest" not in have]


def generation_failure(settings: Settings) -> str | None:
    """Why the model server cannot generate right now, when it says so; None when it can, or cannot tell.

    The bundled engine reports in GET /engine/stats whether its chat runner last died (e.g. SIGILL from a
    llama.cpp build that does not match the CPU) without a generation succeeding since. Ollama has no such
    route: it answers 404 and nothing is claimed."""
    try:
        reply = httpx.get(f"{settings.ollama_url}/engine/stats", timeout=settings.health_timeout)
        stats = reply.json() if reply.status_code == 200 else {}
    except (httpx.HTTPError, ValueError):
        return None
    if not isinstance(stats, dict) or stats.get("can_generate", True):
        return None
    crash = stats.get("last_crash") or {}
    return str(crash.get("error") or "the chat model's runner died and has not generated since")
