"""The Ollama adapters: the chat model, the embedder, model checks, and Ollama's errors made ours."""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import cache
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
            _counted(settings, "model_not_found")
            raise ModelNotFound(model, settings.ollama_url) from exc
        if exc.status_code in (400, 413, 500) and TOO_LONG in text:
            raise InputTooLong(text) from exc
        if exc.status_code in RETRIED_STATUSES:
            raise OllamaUnavailable(
                f"Ollama at {_where(settings)} is busy ({text}) after {settings.ollama_retries} retries; retry later"
            ) from exc
        _counted(settings, "server_error")
        raise OllamaError(f"Ollama at {settings.ollama_url} answered {exc.status_code}: {text}") from exc
    except (ConnectionError, httpx.ConnectError) as exc:
        raise OllamaUnavailable(
            f"cannot reach Ollama at {_where(settings)}; start it (`ollama serve`, or the bundled "
            "`rag engine`) or set OLLAMA_HOST"
        ) from exc
    except httpx.TimeoutException as exc:
        _counted(settings, "timeout")
        hint = ("raise RAG_REQUEST_TIMEOUT if the model is still loading" if timeout is None
                else "it is stalled or overloaded")
        raise OllamaUnavailable(
            f"Ollama at {settings.ollama_url} did not answer within {timeout or settings.request_timeout:g}s; {hint}"
        ) from exc
    except httpx.HTTPError as exc:
        raise OllamaUnavailable(f"talking to Ollama at {settings.ollama_url} failed: {exc}") from exc


def _counted(settings: Settings, kind: str) -> None:
    """An error the transport does not see (it counts refusals, dropped connections, 503s and 429s itself)."""
    host_pool(settings).emit("error", kind)


def call(settings: Settings, model: str, fn: Callable[[], T], timeout: float | None = None) -> T:
    with ollama_errors(settings, model, timeout):
        return fn()


def _where(settings: Settings) -> str:
    return ", ".join(settings.ollama_urls)


def ollama_client(settings: Settings, timeout: float | None = None) -> ollama.Client:
    """A client for calls that may take long (RAG_REQUEST_TIMEOUT), or for quick ones with `timeout`.

    Its requests go through the hosts of OLLAMA_HOST with retries (`FailoverTransport`)."""
    transport = FailoverTransport(host_pool(settings))
    return ollama.Client(host=settings.ollama_url, timeout=timeout or settings.request_timeout, transport=transport)


def ollama_async_client(settings: Settings, timeout: float | None = None) -> ollama.AsyncClient:
    """`ollama_client` for the event loop."""
    transport = FailoverTransport(host_pool(settings))
    return ollama.AsyncClient(
        host=settings.ollama_url, timeout=timeout or settings.request_timeout, transport=transport
    )


# -- several hosts, retries -------------------------------------------------------------------------

RETRIED_STATUSES = (429, 503)  # Ollama's "server busy" (OLLAMA_MAX_QUEUE) and a proxy's rate limit
COOLDOWN, MAX_COOLDOWN = 1.0, 30.0  # seconds a host that refused is skipped, doubled while it stays down
# Raised before any response came back, so the request can go elsewhere: refused, or dropped unanswered.
# A timeout is not among them: the time is spent, and RAG_REQUEST_TIMEOUT bounds the whole request.
UNANSWERED = (httpx.ConnectError, httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError)

Listener = Callable[[str, str, float], None]  # (event, kind, value): what rag serve's /metrics counts


class HostPool:
    """The hosts of OLLAMA_HOST, which of them answer, and the retry policy every client shares.

    Requests take the healthy hosts in turn. A host that refuses a connection is skipped for a cooldown
    (1 s, doubled while it stays down, up to 30 s) and then tried again: once it answers it is back.
    """

    def __init__(self, urls: Sequence[str], retries: int, backoff: float) -> None:
        self.urls, self.retries, self.backoff = list(urls), retries, backoff
        self.down_until = dict.fromkeys(self.urls, 0.0)
        self.cooldown = dict.fromkeys(self.urls, COOLDOWN)
        self.reached = False  # some host has answered once: a refusal is then an outage, worth waiting out
        self.listeners: list[Listener] = []
        self._turns: dict[str, int] = {}  # per path: the chats alternate, whatever the embeddings between them do
        self._lock = threading.Lock()

    def order(self, path: str = "") -> list[str]:
        """The hosts for one attempt: healthy ones from the next in turn for `path`, then the resting ones,
        soonest first."""
        with self._lock:
            turn = self._turns.get(path, 0)
            now, start = time.monotonic(), turn % len(self.urls)
            self._turns[path] = turn + 1
            rotated = self.urls[start:] + self.urls[:start]
            up = [u for u in rotated if self.down_until[u] <= now]
            return up + sorted((u for u in rotated if u not in up), key=self.down_until.__getitem__)

    def failed(self, url: str, exc: Exception) -> None:
        with self._lock:
            wait = self.cooldown[url]
            self.down_until[url] = time.monotonic() + wait
            self.cooldown[url] = min(wait * 2, MAX_COOLDOWN)
        log.warning("Ollama at %s did not answer (%s); skipping it for %.0fs", url, _reason(exc), wait)
        self.emit("error", "connect" if isinstance(exc, httpx.ConnectError) else "disconnected")

    def answered(self, url: str) -> None:
        self.reached = True
        if self.down_until[url]:
            with self._lock:
                self.down_until[url], self.cooldown[url] = 0.0, COOLDOWN
            log.info("Ollama at %s answers again", url)

    def emit(self, event: str, kind: str, value: float = 1.0) -> None:
        for listener in self.listeners:
            listener(event, kind, value)


_POOLS: dict[tuple[tuple[str, ...], int, float], HostPool] = {}  # filled on first use, one per configuration


def host_pool(settings: Settings) -> HostPool:
    """The process's pool for these hosts: every client of this configuration learns which hosts are down."""
    key = (tuple(settings.ollama_urls), settings.ollama_retries, settings.ollama_retry_backoff)
    if key not in _POOLS:
        _POOLS[key] = HostPool(*key)
    return _POOLS[key]


class _Attempts:
    """One request's way through the pool: which host next, and whether and how long to wait for another round."""

    def __init__(self, pool: HostPool, request: httpx.Request) -> None:
        self.pool, self.request, self.attempt = pool, request, 0
        timeout = request.extensions.get("timeout") or {}
        self.deadline = time.monotonic() + float(timeout.get("read") or timeout.get("connect") or 300.0)
        self.error: Exception | None = None
        self.busy: httpx.Response | None = None  # the last 503/429, returned as it is when the retries run out

    def to(self, url: str) -> httpx.Request:
        target = httpx.URL(url)
        self.request.url = self.request.url.copy_with(scheme=target.scheme, host=target.host, port=target.port)
        self.request.headers["Host"] = target.netloc.decode("ascii")
        return self.request

    def keep_busy(self, url: str, response: httpx.Response) -> httpx.Response | None:
        """Remember a busy answer; returns the one it replaces (to be closed)."""
        self.pool.emit("error", "busy" if response.status_code == 503 else "rate_limited")
        previous, self.busy = self.busy, response
        return previous

    def wait(self) -> float | None:
        """Seconds before the next round over the hosts, or None: give up (the retries or the time ran out,
        or no host has ever answered: Ollama is not running, and that is said at once)."""
        if (self.busy is None and not self.pool.reached) or self.attempt >= self.pool.retries:
            return None
        delay = self.pool.backoff * 2**self.attempt * random.uniform(0.5, 1.5)  # jitter: not all at once
        if self.busy is not None and (asked := self.busy.headers.get("retry-after", "")).isdigit():
            delay = max(delay, float(asked))
        if time.monotonic() + delay >= self.deadline:
            return None
        self.attempt += 1
        reason = f"{self.busy.status_code}" if self.busy is not None else _reason(self.error or Exception())
        log.warning("Ollama %s %s failed on every host (%s); retry %s of %s in %.1fs", self.request.method,
                    self.request.url.path, reason, self.attempt, self.pool.retries, delay)
        self.pool.emit("retry", "busy" if self.busy is not None else "connect")
        return delay

    def give_up(self) -> httpx.Response:
        if self.busy is not None:
            return self.busy  # the client raises ResponseError(503), made OllamaUnavailable by ollama_errors
        assert self.error is not None
        raise self.error


@cache
def _tls() -> ssl.SSLContext:
    """One verifying TLS context for the process, made as httpx makes its default (certifi's CAs, or
    SSL_CERT_FILE / SSL_CERT_DIR): each made anew read the CA bundle, ~40 ms of CPU, twice per client."""
    return httpx.create_ssl_context()


class FailoverTransport(httpx.BaseTransport, httpx.AsyncBaseTransport):
    """httpx transport under every Ollama client: sends each request to a healthy host of OLLAMA_HOST and
    retries a refused connection, a 503 (queue full) or a 429 with exponential backoff and jitter, up to
    RAG_OLLAMA_RETRIES times and within the request's timeout."""

    def __init__(self, pool: HostPool) -> None:
        self.pool = pool
        # Both made up front (no connection is opened yet): a client may be used from several threads at once.
        self._sync = httpx.HTTPTransport(verify=_tls())
        self._async = httpx.AsyncHTTPTransport(verify=_tls())

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        attempts = _Attempts(self.pool, request)
        while True:
            for url in self.pool.order(request.url.path):
                try:
                    response = self._sync.handle_request(attempts.to(url))
                except UNANSWERED as exc:
                    attempts.error = exc
                    self.pool.failed(url, exc)
                    continue
                self.pool.answered(url)
                if response.status_code not in RETRIED_STATUSES:
                    return response
                if previous := attempts.keep_busy(url, response):
                    previous.close()
            if (delay := attempts.wait()) is None:
                return attempts.give_up()
            time.sleep(delay)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        attempts = _Attempts(self.pool, request)
        while True:
            for url in self.pool.order(request.url.path):
                try:
                    response = await self._async.handle_async_request(attempts.to(url))
                except UNANSWERED as exc:
                    attempts.error = exc
                    self.pool.failed(url, exc)
                    continue
                self.pool.answered(url)
                if response.status_code not in RETRIED_STATUSES:
                    return response
                if previous := attempts.keep_busy(url, response):
                    await previous.aclose()
            if (delay := attempts.wait()) is None:
                return attempts.give_up()
            await asyncio.sleep(delay)

    def close(self) -> None:
        self._sync.close()

    async def aclose(self) -> None:
        await self._async.aclose()



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
# A factoid's answer (a number, a name, a time) is a sentence or two; a small model fills the rest with loops.
FACTOID_TOKENS = 96


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
        client=ollama_client(settings),  # through the hosts of OLLAMA_HOST, with retries
        async_client=ollama_async_client(settings),
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
        started = time.perf_counter()
        with ollama_errors(self.settings, self.model):
            response = self._client.embed(model=self.model, input=question, keep_alive=self.settings.keep_alive)
        host_pool(self.settings).emit("embed_question", "", time.perf_counter() - started)
        return [float(x) for x in response.embeddings[0]]

    async def aembed_query(self, question: str) -> list[float]:
        """`embed_query` for the event loop: cancelling the awaiting task closes the HTTP request."""
        if self._aclient is None:
            self._aclient = ollama_async_client(self.settings)
        started = time.perf_counter()
        with ollama_errors(self.settings, self.model):
            response = await self._aclient.embed(model=self.model, input=question, keep_alive=self.settings.keep_alive)
        host_pool(self.settings).emit("embed_question", "", time.perf_counter() - started)
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
        with httpx.Client(transport=FailoverTransport(host_pool(settings)), timeout=settings.health_timeout) as http:
            reply = http.get(f"{settings.ollama_url}/engine/stats")
        stats = reply.json() if reply.status_code == 200 else {}
    except (httpx.HTTPError, ValueError):
        return None
    if not isinstance(stats, dict) or stats.get("can_generate", True):
        return None
    crash = stats.get("last_crash") or {}
    return str(crash.get("error") or "the chat model's runner died and has not generated since")
