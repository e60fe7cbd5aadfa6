"""Start real servers for tests: the engine as a `python -m rag.engine` subprocess on a free loopback port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from rag.config import format_host_url, parse_ollama_host

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until_up(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"engine exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"engine at {url} not up after {timeout}s:\n{log.read_text()[-3000:]}")


@contextmanager
def engine_process(
    backend: str = "deterministic", timeout: float = 120.0, **env: str
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Like `running_engine`, also yielding the process (to signal it); stopped with SIGTERM at exit."""
    host = env.pop("OLLAMA_HOST", f"127.0.0.1:{free_port()}")
    scheme, address, port = parse_ollama_host(host)
    url = format_host_url(scheme, "127.0.0.1" if address in ("0.0.0.0", "::") else address, port)
    environment = {
        **os.environ,
        "OLLAMA_HOST": host,
        "RAG_ENGINE_BACKEND": backend,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        # Run from a scratch directory (no stray .env is read) with the checkout importable.
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        **{key: str(value) for key, value in env.items()},
    }
    with tempfile.TemporaryDirectory(prefix="engine-") as tmp:
        log = Path(tmp) / "engine.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "rag.engine"], cwd=tmp, env=environment, stdout=out, stderr=out
            )
        try:
            wait_until_up(url, proc, log, timeout)
            yield url, proc
        finally:
            stop(proc, 15)


def stop(proc: subprocess.Popen, timeout: float) -> None:
    """SIGTERM, then SIGKILL if the process has not exited within `timeout` seconds."""
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wait_http(url: str, proc: subprocess.Popen, what: str, timeout: float = 60.0, key: str = "") -> None:
    """Wait until GET url answers 200 while proc lives (sending `key` as a Bearer token); fail naming `what`
    otherwise."""
    deadline = time.monotonic() + timeout
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=5, headers=headers).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{what} did not answer {url} within {timeout:g}s")


@contextmanager
def running_engine(backend: str = "deterministic", timeout: float = 120.0, **env: str) -> Iterator[str]:
    """Run the engine with `backend` ("real" | "deterministic") and extra environment; yields its base URL.

    OLLAMA_HOST may be given in `env` (e.g. to test its parsing); otherwise a free loopback port is used.
    """
    with engine_process(backend, timeout, **env) as (url, _):
        yield url


@contextmanager
def serve_process(storage: Path, ollama_url: str, *args: str, **env: str) -> Iterator[tuple[str, Path]]:
    """`rag serve` as a user runs it, on a free port; yields (base URL, the file its stderr goes to).

    With RAG_API_KEYS in `env`, its first key is sent while waiting for the server to be up."""
    port = free_port()
    environment = {**os.environ, "OLLAMA_HOST": ollama_url, "RAG_STORAGE_DIR": str(storage), **env}
    log = storage.parent / f"serve-{port}.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "rag", "serve", "--port", str(port), *args],
            env=environment, cwd=storage.parent, stdout=subprocess.DEVNULL, stderr=out,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{base}/health", proc, "rag serve", key=env.get("RAG_API_KEYS", "").split(",")[0])
        yield base, log
    finally:
        stop(proc, 30)
