"""PDF text extraction in long-lived worker processes, with a memory cap and a time limit per file.

pypdf has had decompression bombs and endless loops, so a PDF is never parsed in our own process. Each
worker is a Python child with its address space capped (RLIMIT_AS) that reads one request per line on
stdin and answers one JSON object per line on stdout. Starting a child per file cost ~0.2 s of CPU,
more than the model spends embedding a short PDF; a worker pays it once per RECYCLE_AFTER files.

A worker that overruns the time limit is killed; one that dies, or runs out of memory, is replaced.
Either way only that file is lost, with a reason (`extract` returns {"error": ...}, which
`ingest.loaders` turns into the user's message). This module imports only the standard library at
the top, so the child starts fast and under a small memory cap.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import json
import logging
import os
import queue
import resource
import select
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

log = logging.getLogger(__name__)

_MB = 1024 * 1024
# A worker is replaced after this many files, so whatever pypdf leaves behind cannot add up under the cap.
RECYCLE_AFTER = 200
# The worker imports this module from the folder that holds `ingest`, installed or not.
_IMPORT_ROOT = str(Path(__file__).resolve().parent.parent)
_WORKER = (
    "import sys; sys.path.insert(0, sys.argv[1]); "
    "from ingest.pdf_workers import worker_main; worker_main(int(sys.argv[2]))"
)


# A second worker is started only when a file has waited this long for the first: most PDFs take
# milliseconds, and a worker costs ~0.1 s of CPU to start (Python, then pypdf's import).
SPARE_AFTER = 0.25


class PdfWorkers:
    """Up to `size` extraction workers shared by the loader threads; the first is started on first use,
    each further one only when a file has waited SPARE_AFTER seconds for a free worker (a slow PDF).

    `extract(path)` is thread-safe: each call has a worker to itself for the file's duration.
    Use as a context manager, or call `close()`, to stop the workers.
    """

    def __init__(self, memory_mb: int, timeout_s: float, size: int = 1) -> None:
        self.memory_mb, self.timeout_s = memory_mb, timeout_s
        self._idle: queue.Queue[_Worker | None] = queue.Queue()
        self._idle.put(None)  # a slot whose worker is started when first needed
        self._spares = size - 1  # slots not opened yet
        self._all: list[_Worker] = []
        self._lock = threading.Lock()
        self.started = 0  # workers started in all, for tests and benchmarks

    def __enter__(self) -> PdfWorkers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def extract(self, path: Path) -> dict[str, Any]:
        """{"pages": [[number, text], ...], "skipped": [...]} or {"error": kind, "reason": ...}."""
        worker = self._take()
        try:
            fresh = worker is None or not worker.usable()
            if fresh:
                worker = self._start(worker)
            assert worker is not None
            result = worker.ask(str(path), self.timeout_s)
            if result.get("error") == "memory" and not fresh:
                # The cap is per process: a worker that has read other files may be nearer it than a new one.
                worker = self._start(worker)
                result = worker.ask(str(path), self.timeout_s)
            return result
        finally:
            self._idle.put(worker)

    def warm(self) -> None:
        """Start the first worker now, when PDFs are coming: its Python and pypdf load while the caller
        gets ready (opens the store, loads the model), not while the first PDF waits."""
        try:
            worker = self._idle.get_nowait()
        except queue.Empty:
            return
        try:
            if worker is None:
                worker = self._start(None)
        finally:
            self._idle.put(worker)

    def _take(self) -> _Worker | None:
        """A free worker, or None (a slot to start one in) when none came free within SPARE_AFTER seconds
        and a slot is left."""
        while True:
            with self._lock:
                spare = self._spares > 0
            try:
                return self._idle.get(timeout=SPARE_AFTER if spare else None)
            except queue.Empty:
                with self._lock:
                    if self._spares > 0:
                        self._spares -= 1
                        return None

    def close(self) -> None:
        with self._lock:
            workers, self._all = self._all, []
        for worker in workers:
            worker.stop()

    def _start(self, old: _Worker | None) -> _Worker:
        if old is not None:
            old.stop()
        worker = _Worker(self.memory_mb)
        with self._lock:
            if old in self._all:
                self._all.remove(old)
            self._all.append(worker)
            self.started += 1
        return worker


class _Worker:
    """One child process and the thread that keeps its stderr drained (its last lines explain a death)."""

    def __init__(self, memory_mb: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _WORKER, _IMPORT_ROOT, str(memory_mb)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        self.served = 0
        self.broken = False
        self._buffer = b""
        self._errors: collections.deque[str] = collections.deque(maxlen=20)
        self._drain = threading.Thread(target=self._read_errors, args=(self.proc.stderr,), daemon=True)
        self._drain.start()
        assert self.proc.stdout is not None
        self._stdout = self.proc.stdout.fileno()
        self._poll = select.poll()  # not select(): a process with over 1,024 files open gets fds it cannot take
        self._poll.register(self._stdout, select.POLLIN)

    def usable(self) -> bool:
        return not self.broken and self.served < RECYCLE_AFTER and self.proc.poll() is None

    def ask(self, path: str, timeout_s: float) -> dict[str, Any]:
        self.served += 1
        deadline = time.monotonic() + timeout_s
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(json.dumps({"path": path}).encode() + b"\n")
            self.proc.stdin.flush()
            line = self._read_line(deadline)
        except TimeoutError:
            self.stop()
            return {"error": "timeout"}
        except (BrokenPipeError, EOFError):
            self.stop()
            return {"error": "died", "code": self.proc.returncode, "reason": self._last_error()}
        try:
            result = dict(json.loads(line))
        except ValueError:  # not our answer: whatever wrote it, this worker is not to be trusted again
            self.stop()
            return {"error": "died", "code": self.proc.returncode, "reason": f"unreadable answer {line[:80]!r}"}
        for note in result.pop("skipped", []):
            log.debug("pypdf on %s: skipped %s", path, note)
        if result.get("error") == "memory":
            self.broken = True  # it exits after saying so; the next file gets a new worker
        return result

    def stop(self) -> None:
        self.broken = True
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):  # a pipe whose reader is gone may fail to flush
                    stream.close()
        self._drain.join(timeout=5)

    def _read_line(self, deadline: float) -> bytes:
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            if self._poll.poll(max(1, int(left * 1000))):  # readable, or the worker hung up
                data = os.read(self._stdout, 1 << 16)
                if not data:
                    self.proc.wait()
                    self._drain.join(timeout=5)
                    raise EOFError
                self._buffer += data
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line

    def _read_errors(self, stream: IO[bytes]) -> None:
        for raw in stream:
            text = raw.decode("utf-8", "replace").rstrip()
            if text:
                self._errors.append(text)
                log.debug("PDF worker %d: %s", self.proc.pid, text)

    def _last_error(self) -> str:
        return self._errors[-1] if self._errors else "no message"


# -- the child side ---------------------------------------------------------------------------------


def worker_main(memory_mb: int) -> None:
    """Runs in the worker: cap memory, then answer one JSON line per requested path until stdin closes."""
    out, sys.stdout = sys.stdout, sys.stderr  # a stray print must not corrupt the answers
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = memory_mb * _MB if hard == resource.RLIM_INFINITY else min(memory_mb * _MB, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    with contextlib.suppress(Exception):  # load pypdf before the first request; a failure is reported per file
        import pypdf  # noqa: F401
    for line in sys.stdin:
        result = _extract(json.loads(line)["path"])
        out.write(json.dumps(result) + "\n")
        out.flush()
        if result.get("error") == "memory":
            return  # what is left of this process after a MemoryError is not to be trusted with the next file


def _extract(path: str) -> dict[str, Any]:
    try:
        return _pdf_pages(path)
    except MemoryError:
        return {"error": "memory"}
    except ImportError as exc:  # pypdf missing, or its libraries could not even be mapped under the cap
        return {"error": "setup", "reason": f"{type(exc).__name__}: {exc}"}
    except OSError as exc:  # ENOMEM: the cap hit where Python reads or maps a file (pypdf's own modules, say)
        if exc.errno == errno.ENOMEM:
            return {"error": "memory"}
        return {"error": "unreadable", "reason": f"{type(exc).__name__}: {exc}"}
    except Exception as exc:  # whatever pypdf raises is the reason the user needs to see
        return {"error": "unreadable", "reason": f"{type(exc).__name__}: {exc}"}


def _pdf_pages(path: str) -> dict[str, Any]:
    """Text of every page that has some, as [number, text]; a page that fails is skipped and noted."""
    from pypdf import PdfReader  # imported here so it loads under the memory cap, in the worker only

    reader = PdfReader(path)
    if reader.is_encrypted:
        try:
            if not reader.decrypt(""):  # many PDFs only set an owner password
                return {"error": "encrypted"}
        except Exception as exc:  # e.g. AES without the `cryptography` package
            return {"error": "encrypted", "reason": f"{type(exc).__name__}: {exc}"}
    pages, failures = [], []
    for number, page in enumerate(reader.pages, start=1):
        try:
            text = page.extract_text()
        except MemoryError:
            raise
        except Exception as exc:  # keep the other pages; report this one if none are left
            failures.append(f"page {number}: {type(exc).__name__}: {exc}")
            continue
        if text.strip():  # lone surrogates (broken font maps) become "?": hashing needs valid UTF-8
            pages.append([number, text.encode("utf-8", "replace").decode("utf-8")])
    if not pages and failures:
        return {"error": "unreadable", "reason": failures[0]}
    return {"pages": pages, "skipped": failures}
