"""Test helpers: isolated settings, server-side counters of the engine, small file makers."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx

from rag.config import Settings
from tests.support.servers import free_port

__all__ = ["free_port"]  # re-exported: tests take it from here with the other helpers


def make_settings(tmp_path: Path, ollama_url: str, **overrides: Any) -> Settings:
    """Settings for one test: its own storage, no .env, the engine at ollama_url."""
    values: dict[str, Any] = {
        "ollama_host": ollama_url,
        "storage_dir": tmp_path / "storage",
        "request_timeout": 120.0,
        "min_score": 0.0,
        "allowed_hosts": "testserver",  # the Host TestClient sends; the Host check's own tests set their own
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def engine_requests(url: str, path: str = "/api/embed") -> int:
    """How many requests the engine has served on `path`, counted at the server."""
    stats = httpx.get(f"{url}/engine/stats", timeout=10).json()
    return int(stats["requests"].get(path, 0))


def dead_url() -> str:
    """A loopback URL where nothing listens: 'Ollama is down'."""
    return f"http://127.0.0.1:{free_port()}"


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


ENGLISH = (
    "The reactor cooling loop uses distilled water. Pumps are inspected every Tuesday. "
    "The spare parts are kept in building seven. Operators log every inspection in the blue binder. "
)
CHINESE = "数据中心的备份每天凌晨两点开始。备份文件保存三十天！过期的文件会被自动删除；管理员每周检查一次日志。"


def nest_past_path_max(folder: Path) -> None:
    """Nest 250-character names in `folder` until a path inside is longer than Linux allows (4,096 bytes):
    a folder that exists but cannot be listed by its path, without needing a non-root user."""
    fd = os.open(folder, os.O_RDONLY)
    for _ in range(20):
        os.mkdir("n" * 250, dir_fd=fd)
        inner = os.open("n" * 250, os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = inner
    os.close(fd)
