"""API keys: who may call rag serve. One ASGI middleware checks every route but the liveness probe, so routes
added later (the OpenAI- and Ollama-compatible ones included) are covered without saying so.

Keys come from RAG_API_KEYS / RAG_API_KEYS_FILE (any route) and RAG_ADMIN_KEYS (any route, and starting a
sync). With no key configured the service is open, which `refuse_open_bind` allows on loopback only.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Callable, Iterable

from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from rag.config import Settings
from rag.errors import AdminOnly, ExposedWithoutKeys, RagError, Unauthorized
from rag.hostcheck import binds_beyond_loopback

log = logging.getLogger(__name__)

# Answered without a key: the liveness probe (a container runtime has no key), and the web page's own static
# files, which hold no documents: the page asks for a key and sends it with every API call it makes.
PUBLIC_PATHS = frozenset({"/livez", "/"})
PUBLIC_PREFIXES = ("/ui/",)
CHALLENGE = 'Bearer realm="rag"'

Reject = Callable[[RagError, str], Response]


def _digest(key: str) -> bytes:
    # Hashed first, so the comparison takes the same time whatever the lengths of the key and the guess.
    return hashlib.sha256(key.encode("utf-8")).digest()


class Keys:
    """A set of keys, compared in constant time: every key is compared, whether one matched or not."""

    def __init__(self, keys: Iterable[str]) -> None:
        self._digests = [_digest(k) for k in keys]

    def __bool__(self) -> bool:
        return bool(self._digests)

    def match(self, candidate: str) -> bool:
        guess, found = _digest(candidate), False
        for digest in self._digests:
            found |= hmac.compare_digest(guess, digest)
        return found


def bearer(scope: Scope) -> str:
    """The token of an `Authorization: Bearer TOKEN` header; '' when there is none."""
    for name, value in scope.get("headers", ()):
        if name.lower() == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if scheme.lower() == "bearer" else ""
    return ""


def is_admin_route(method: str, path: str) -> bool:
    """Starting a sync changes the index: POST /sync. Reading a job's progress needs an API key only."""
    return method == "POST" and path.rstrip("/") == "/sync"


class RequireKey:
    """ASGI middleware: 401 (WWW-Authenticate: Bearer) without a known key; 403 when an admin key is needed.

    `reject(error, path)` makes the response, so the caller keeps its error shapes in one place.
    """

    def __init__(self, app: ASGIApp, settings: Settings, reject: Reject) -> None:
        self.app, self.reject = app, reject
        self.keys, self.admin = Keys(settings.key_set()), Keys(settings.key_set(admin=True))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or (error := self.refusal(scope)) is None:
            await self.app(scope, receive, send)
            return
        log.warning("%s %s: %s", scope.get("method", "WEBSOCKET"), scope["path"], error.message)
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        response = self.reject(error, scope["path"])
        if isinstance(error, Unauthorized):
            response.headers["WWW-Authenticate"] = CHALLENGE
        await response(scope, receive, send)

    def refusal(self, scope: Scope) -> RagError | None:
        path, method = scope["path"], scope.get("method", "GET")
        if not self.keys or path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES):
            return None
        token = bearer(scope)
        if not token:
            return Unauthorized("an API key is needed: send the header Authorization: Bearer KEY "
                                "(a key from RAG_API_KEYS)")
        if not self.keys.match(token):
            return Unauthorized("the API key is not known: send one of the keys in RAG_API_KEYS")
        if is_admin_route(method, path) and not self.admin.match(token):
            return AdminOnly(f"{method} {path} needs an admin key (RAG_ADMIN_KEYS); this key may only ask")
        return None


def refuse_open_bind(settings: Settings) -> None:
    """Raise ExposedWithoutKeys when rag serve would listen beyond loopback with no API key, unless asked to
    on purpose with --insecure-no-auth, which is logged loudly."""
    if not binds_beyond_loopback(settings.host) or settings.key_set():
        return
    if settings.insecure_no_auth:
        log.warning("INSECURE: rag serve listens on %s with no API key (--insecure-no-auth): anyone who can "
                    "reach this machine can read the documents and use the models; set RAG_API_KEYS", settings.host)
        return
    raise ExposedWithoutKeys(
        f"rag serve will not listen on {settings.host}, beyond loopback, without an API key: set "
        "RAG_API_KEYS=KEY[,KEY...] (or RAG_API_KEYS_FILE), or pass --insecure-no-auth to serve an open API on purpose"
    )
