"""A tiny real HTTP server speaking Ollama's /api/chat with scripted replies, for judge-failure tests."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Script:
    """Replies to send in order (the last one repeats) and the chat requests received."""

    replies: Sequence[str | tuple[int, str]]  # a reply's content, or (HTTP status, Ollama's error text)
    delay: float = 0.0  # seconds to wait before each reply
    requests: list[dict[str, Any]] = field(default_factory=list)

    def next_reply(self) -> str | tuple[int, str]:
        return self.replies[min(len(self.requests) - 1, len(self.replies) - 1)]


def _handler(script: Script) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if self.path != "/api/chat":
                self.send_error(404)
                return
            script.requests.append(body)
            time.sleep(script.delay)
            scripted = script.next_reply()
            status, reply = 200, {
                "model": body["model"], "created_at": "2026-01-01T00:00:00Z", "done": True, "done_reason": "stop",
                "message": {"role": "assistant", "content": scripted},
            }
            if isinstance(scripted, tuple):  # an error answer, shaped as Ollama's
                status, reply = scripted[0], {"error": scripted[1]}
            data = json.dumps(reply).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client timed out and left, as the timeout test intends

        def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
            pass

    return Handler


@contextmanager
def scripted_ollama(replies: Sequence[str | tuple[int, str]], delay: float = 0.0) -> Iterator[tuple[str, Script]]:
    """Yields (base URL, script) of a server on a free loopback port."""
    script = Script(replies, delay)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(script))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", script
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
