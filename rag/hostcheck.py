"""The Host header check: a loopback server answers only requests addressed to it by a loopback name.

Without it, a web page the user visits can reach a loopback API through DNS rebinding (its own host name
made to resolve to 127.0.0.1, as in Ollama's CVE-2024-28224): the browser then sends that name as `Host`.
Pure ASGI and free of our settings, so `rag serve` and the local engine share it.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger(__name__)

ANY = "*"
WILDCARD_BINDS = frozenset({"", "0.0.0.0", "::"})

Reject = Callable[[str], ASGIApp]


def parse_hosts(value: str) -> list[str]:
    """'a.example, *.lan,*' -> ['a.example', '*.lan', '*']: the comma-separated allow-list of a setting."""
    return [h.strip().lower() for h in value.split(",") if h.strip()]


def host_name(header: str) -> str:
    """The name in a Host header, without port or IPv6 brackets, lower case; '' when unparsable."""
    try:
        return (urlsplit(f"//{header.strip()}").hostname or "").rstrip(".")
    except ValueError:
        return ""


def is_loopback(name: str) -> bool:
    """localhost, *.localhost (RFC 6761: browsers resolve them to loopback themselves), 127.0.0.0/8, ::1."""
    name = name.strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:127.0.0.1
    return address.is_loopback or bool(mapped and mapped.is_loopback)


def binds_beyond_loopback(bind_host: str) -> bool:
    """Whether listening on bind_host lets other machines connect (a wildcard or a non-loopback address)."""
    return bind_host.strip().strip("[]") in WILDCARD_BINDS or not is_loopback(bind_host)


def allowed_names(allowed_hosts: Iterable[str], bind_host: str | None) -> list[str]:
    """The allow-list in effect: the given names, plus the bound host unless it is a wildcard."""
    names = [h.strip().lower() for h in allowed_hosts if h.strip()]
    bind = (bind_host or "").strip().strip("[]").lower()
    if bind not in WILDCARD_BINDS:
        names.append(bind)
    return names


def host_allowed(name: str, allowed: Iterable[str]) -> bool:
    """A loopback name, an exact entry, a subdomain of a `*.domain` entry, or anything with `*`."""
    if is_loopback(name):
        return True
    return any(entry in (ANY, name) or (entry.startswith("*.") and name.endswith(entry[1:])) for entry in allowed)


def refusal(host: str, setting: str = "the allowed hosts") -> str:
    """What a refused client is told: the Host it sent and how to get it accepted."""
    return f"Host {host!r} is not allowed: use a loopback address, or add the name to {setting}"


def forbidden(host: str) -> ASGIApp:
    """The default refusal, in Ollama's error shape: 403 {"error": message}."""
    return JSONResponse({"error": refusal(host)}, status_code=403)


class HostCheck:
    """ASGI middleware: 403 for an HTTP or WebSocket request whose Host is not allowed.

    Allowed: loopback names (localhost, *.localhost, 127.0.0.0/8, [::1]), `bind_host` when it is not a
    wildcard, and `allowed_hosts` (exact names, `*.domain`, or `*` for any). A request with no Host header
    is let through: browsers always send one, so it cannot come from a rebound page. `reject(host)` gives
    the response for a refused Host value, so each server keeps its own error shape.
    """

    def __init__(
        self,
        app: ASGIApp,
        allowed_hosts: Iterable[str] = (),
        bind_host: str | None = None,
        reject: Reject = forbidden,
    ) -> None:
        self.app = app
        self.allowed = allowed_names(allowed_hosts, bind_host)
        self.reject = reject

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        header = _header(scope, b"host") if scope["type"] in ("http", "websocket") else None
        if header is None or host_allowed(host_name(header), self.allowed):
            await self.app(scope, receive, send)
            return
        log.warning("refused a request for Host %r (allowed: loopback%s)", header,
                    "".join(f", {h}" for h in self.allowed))
        if scope["type"] == "websocket":  # closing before accepting is an HTTP 403 (ASGI spec)
            await send({"type": "websocket.close", "code": 1008})
            return
        await self.reject(header)(scope, receive, send)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None


def warn_if_exposed(what: str, bind_host: str, allowed_hosts: Iterable[str], setting: str) -> bool:
    """Log a warning when `what` listens beyond loopback; True when it does."""
    if not binds_beyond_loopback(bind_host):
        return False
    names = allowed_names(allowed_hosts, bind_host)
    log.warning(
        "%s listens on %s, beyond loopback: anyone who can reach this machine can use it (there is no "
        "authentication). Host names accepted: loopback%s; set %s to allow others.",
        what, bind_host, "".join(f", {n}" for n in names), setting,
    )
    return True
