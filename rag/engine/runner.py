"""Model runners: every loaded model lives in a child process of its own, as in Ollama.

Whatever the model library does there (an illegal instruction from a build that does not match the CPU, a
segfault, an abort, the out-of-memory killer) ends that process, not the engine: the request in flight gets
an error naming the signal, and the scheduler starts a fresh runner for the next request.

The parent side (`RunnerClient`) speaks the same ChatModel / EmbeddingModel protocols as the in-process models, so
the scheduler and the service do not know the difference. One message at a time crosses the pipe per runner;
a scheduler slot owns its runner for the whole of a request.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import os
import re
import signal
import threading
import time
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from typing import Any, cast

from rag.engine.backends import make_backend
from rag.engine.catalog import ModelSpec
from rag.engine.config import EngineSettings
from rag.engine.protocol import Backend, ContextExceeded, Embedded, Emit, GenerationStats, Sampling

logger = logging.getLogger(__name__)

# Spawn, not fork: the engine has threads and an event loop, and a runner must start from a clean interpreter.
_CONTEXT = multiprocessing.get_context("spawn")
PIECE_INTERVAL = 0.05  # seconds: how often a runner sends the text generated so far
_POLL = 0.05  # seconds between checks for a cancel or a dead runner while waiting for output
LOAD_TIMEOUT = 300.0
TEST_FAULT = re.compile(r"<<runner-fault:(SIG[A-Z]+)>>")  # only honoured with RAG_ENGINE_TEST_FAULTS=1
_SIGNAL_WORDS = {
    "SIGILL": "illegal instruction",
    "SIGSEGV": "segmentation fault",
    "SIGBUS": "bus error",
    "SIGFPE": "floating-point exception",
    "SIGABRT": "aborted",
    "SIGKILL": "killed, e.g. by the out-of-memory killer",
    "SIGTERM": "terminated",
}
_SIGNAL_HINTS = {
    "SIGILL": "the llama.cpp build does not match this CPU; rebuild it portably with `make install` (see README)",
    "SIGKILL": "if nothing killed it on purpose, the machine ran out of memory; lower OLLAMA_NUM_PARALLEL or num_ctx",
}


class RunnerCrashed(Exception):
    """The runner process of a model died; the message names the model and the signal and says what to do."""


class RunnerFailed(Exception):
    """The model code in a runner raised an error (the runner itself is still alive)."""


def crash_message(model: str, exitcode: int | None) -> str:
    """`model runner for X terminated: signal SIGILL (illegal instruction); <what to do>`."""
    if exitcode is None or exitcode >= 0:
        return f"model runner for {model} terminated: exit status {exitcode}; see the engine log"
    try:
        name = signal.Signals(-exitcode).name
    except ValueError:
        name = f"signal {-exitcode}"
    words = _SIGNAL_WORDS.get(name, "")
    hint = _SIGNAL_HINTS.get(name, "the next request starts a fresh runner; see the engine log")
    return f"model runner for {model} terminated: signal {name}{f' ({words})' if words else ''}; {hint}"


class RunnerClient:
    """The engine's handle on one runner process holding one model instance."""

    def __init__(self, settings: EngineSettings, spec: ModelSpec, n_ctx: int) -> None:
        self.spec, self.n_ctx = spec, n_ctx
        self.context_length = spec.context_length
        self.dead = False
        self._lock = threading.Lock()  # close() may come from another thread than the request
        self.conn, child = _CONTEXT.Pipe()
        self.process = _CONTEXT.Process(
            target=_runner_main, args=(child, settings, spec, n_ctx), name=f"runner {spec.name}", daemon=True
        )
        self.process.start()
        child.close()
        kind, value = self._receive(timeout=LOAD_TIMEOUT)
        if kind != "ready":
            self.close()
            raise RunnerFailed(f"loading {spec.name} in its runner failed: {value}")
        self.template: str = value["template"]
        logger.info("runner for %s started (pid %s, num_ctx %s)", spec.name, self.pid, n_ctx)

    @property
    def pid(self) -> int | None:
        return self.process.pid

    @property
    def alive(self) -> bool:
        return not self.dead and self.process.is_alive()

    # The model protocols (ChatModel, EmbeddingModel), forwarded to the runner.

    def render(self, messages: Sequence[dict[str, str]]) -> str:
        return str(self._call(("render", list(messages))))

    def generate(
        self, prompt: str, sampling: Sampling, grammar: Any, cancel: threading.Event, emit: Emit
    ) -> GenerationStats:
        result = self._call(("generate", prompt, sampling, grammar), cancel, emit)
        assert isinstance(result, GenerationStats)
        return result

    def embed(self, texts: Sequence[str], truncate: bool) -> Embedded:
        result = self._call(("embed", list(texts), truncate))
        assert isinstance(result, Embedded)
        return result

    def close(self) -> None:
        """Ask the runner to exit without waiting for it (the scheduler calls this on the event loop);
        a thread reaps it, and kills it if it has not gone within a few seconds."""
        with self._lock:
            if self.dead and not self.process.is_alive():
                return
            self.dead = True
            with contextlib.suppress(OSError):
                self.conn.send(("close",))
        threading.Thread(target=self._reap, name=f"reap {self.pid}", daemon=True).start()

    def _reap(self) -> None:
        self.process.join(timeout=3)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout=3)
        self.conn.close()

    # The pipe.

    def _call(self, request: tuple[Any, ...], cancel: threading.Event | None = None, emit: Emit | None = None) -> Any:
        if not self.alive:
            raise RunnerCrashed(crash_message(self.spec.name, self.process.exitcode))
        try:
            self.conn.send(request)
        except OSError:
            raise self._crashed() from None
        cancel_sent = False
        while True:
            if cancel is not None and cancel.is_set() and not cancel_sent:
                with contextlib.suppress(OSError):  # the runner may be finishing; the reply still comes
                    self.conn.send(("cancel",))
                cancel_sent = True
            kind, value = self._receive(timeout=None, cancel=None if cancel_sent else cancel)
            if kind == "piece" and emit is not None:
                emit(value)
            elif kind == "ok":
                return value
            elif kind == "too_long":
                raise ContextExceeded(value)
            elif kind == "error":
                raise RunnerFailed(value)

    def _receive(self, timeout: float | None, cancel: threading.Event | None = None) -> tuple[str, Any]:
        """The next message; waits in short polls so a dead runner or a cancel is noticed promptly."""
        waited = 0.0
        while True:
            try:
                if self.conn.poll(_POLL):
                    return self.conn.recv()  # type: ignore[no-any-return]
            except (EOFError, OSError):
                raise self._crashed() from None
            if not self.process.is_alive():
                raise self._crashed()
            if cancel is not None and cancel.is_set():
                return "tick", None  # let the caller send the cancel
            waited += _POLL
            if timeout is not None and waited >= timeout:
                self.process.kill()
                raise self._crashed()

    def _crashed(self) -> RunnerCrashed:
        self.dead = True
        self.process.join(timeout=5)
        message = crash_message(self.spec.name, self.process.exitcode)
        logger.error("%s (pid %s)", message, self.pid)
        return RunnerCrashed(message)


class RunnerBackend:
    """The engine's backend: the configured model code (real or deterministic), each instance in a runner."""

    def __init__(self, settings: EngineSettings) -> None:
        self.settings = settings
        self.name: str = settings.backend
        self._formats: Backend | None = None
        self._templates: dict[str, str] = {}

    def load(self, spec: ModelSpec, n_ctx: int, slots: int) -> list[Any]:
        """One runner per parallel slot: a runner serves one request at a time."""
        runners: list[RunnerClient] = []
        try:
            for _ in range(slots):
                runners.append(RunnerClient(self.settings, spec, n_ctx))
        except BaseException:
            for runner in runners:
                runner.close()
            raise
        self._templates.setdefault(spec.name, runners[0].template)
        return runners

    def compile_format(self, fmt: str | dict[str, Any]) -> Any:
        # Grammar compilation is pure Python (JSON schema -> GBNF text) in both backends: safe in the engine.
        if self._formats is None:
            self._formats = make_backend(self.settings)
        return self._formats.compile_format(fmt)

    def template(self, spec: ModelSpec) -> str:
        if spec.kind != "chat":
            return ""
        if spec.name not in self._templates:
            runner = RunnerClient(self.settings, spec, min(512, spec.context_length))
            runner.close()
            self._templates[spec.name] = runner.template
        return self._templates[spec.name]


# The runner process.


class _PipeCancel:
    """The runner's side of a cancel: a "cancel" message from the engine, read between tokens."""

    def __init__(self, conn: Connection) -> None:
        self.conn, self.flag = conn, False

    def is_set(self) -> bool:
        if not self.flag and self.conn.poll():
            self.conn.recv()  # only a cancel is sent while a generation runs; EOF (engine gone) ends us
            self.flag = True
        return self.flag


def _die_with_parent() -> None:
    """Linux: get SIGKILL when the engine dies, so no runner outlives it."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _test_fault(settings: EngineSettings, prompt: str, prompt_tokens: int) -> None:
    """Test-only (RAG_ENGINE_TEST_FAULTS=1): die by a signal the way a broken model library would."""
    if not settings.test_faults:
        return
    name = settings.test_fault_long_prompt if prompt_tokens >= 512 else ""
    if found := TEST_FAULT.search(prompt):
        name = found.group(1)
    if not name:
        return
    if name == "SIGSEGV":
        ctypes.string_at(0)  # a real null-pointer read
    signal.raise_signal(signal.Signals[name])


def _load(settings: EngineSettings, spec: ModelSpec, n_ctx: int) -> tuple[Any, str]:
    backend = make_backend(settings)
    model = backend.load(spec, n_ctx, 1)[0]
    return model, backend.template(spec)


def _runner_main(conn: Connection, settings: EngineSettings, spec: ModelSpec, n_ctx: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the engine decides
    _die_with_parent()
    logging.basicConfig(
        level=settings.log_level, format=f"%(asctime)s %(levelname)s runner[{os.getpid()}]: %(message)s"
    )
    try:
        model, template = _load(settings, spec, n_ctx)
    except Exception as exc:
        logger.exception("loading %s failed", spec.name)
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", {"template": template}))
    handlers: dict[str, Callable[..., Any]] = {
        "generate": lambda *args: _generate(conn, settings, model, *args),
        "render": getattr(model, "render", None) or _unsupported,
        "embed": getattr(model, "embed", None) or _unsupported,
    }
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            return  # the engine has gone
        op, args = request[0], request[1:]
        if op == "close":
            return
        if op == "cancel":
            continue  # arrived after its generation had already finished
        try:
            result = handlers[op](*args)
        except ContextExceeded as exc:
            conn.send(("too_long", str(exc)))
        except Exception as exc:
            logger.exception("%s failed in the runner for %s", op, spec.name)
            conn.send(("error", f"{type(exc).__name__}: {exc}"))
        else:
            conn.send(("ok", result))


def _unsupported(*_: Any) -> Any:
    raise TypeError("this model does not support that operation")


def _generate(conn: Connection, settings: EngineSettings, model: Any, prompt: str, sampling: Sampling,
              grammar: Any) -> GenerationStats:
    if settings.test_faults:
        _test_fault(settings, prompt, model.prompt_tokens(prompt))
    cancel = cast(threading.Event, _PipeCancel(conn))  # duck-typed: only is_set() is used
    pieces = _Coalescer(conn)
    try:
        return model.generate(prompt, sampling, grammar, cancel, pieces.emit)  # type: ignore[no-any-return]
    finally:
        pieces.flush()


class _Coalescer:
    """Sends generated text to the engine at most every PIECE_INTERVAL seconds (the first piece at once).

    One message per token would wake the engine's threads ~100 times a second, and on 2 cores each wake-up
    is taken from llama.cpp's own threads; a few tokens per message cost a client nothing it can see."""

    def __init__(self, conn: Connection) -> None:
        self.conn, self.sent_at = conn, 0.0
        self.parts: list[str] = []

    def emit(self, text: str) -> None:
        self.parts.append(text)
        now = time.monotonic()
        if now - self.sent_at >= PIECE_INTERVAL:
            self.flush()
            self.sent_at = now

    def flush(self) -> None:
        if self.parts:
            self.conn.send(("piece", "".join(self.parts)))
            self.parts.clear()
