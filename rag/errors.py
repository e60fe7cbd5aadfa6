"""The error tree: what can go wrong, said so a user knows what to do. Mapped to HTTP in rag/serve/app.py."""

from __future__ import annotations


class RagError(Exception):
    """Base of every error we raise on purpose. `code` is stable; `message` is for people."""

    code = "error"
    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(RagError):
    code, status = "bad_request", 422


class OllamaUnavailable(RagError):
    code, status = "ollama_unavailable", 503
    retry_after = 5  # seconds: sent as Retry-After, as the retries within the request have run out


class ModelNotFound(RagError):
    code, status = "model_not_found", 503

    def __init__(self, model: str, host: str = "") -> None:
        where = f" at {host}" if host else ""
        super().__init__(f"model '{model}' is not available on Ollama{where}; run: ollama pull {model}")
        self.model = model


class OllamaError(RagError):
    code, status = "ollama_error", 502


class InputTooLong(RagError):
    """The embedding model refused an input as longer than its context; the caller splits it."""

    code, status = "input_too_long", 422


class EmbeddingModelMismatch(RagError):
    code, status = "embedding_model_mismatch", 409


class StoreLocked(RagError):
    code, status = "store_locked", 409


class StoreUnavailable(RagError):
    code, status = "store_unavailable", 503


class StoreDamaged(RagError):
    """A file of ours under storage/ (the manifest) cannot be read: said with the way to rebuild."""

    code, status = "store_damaged", 500


class NotIndexed(RagError):
    code, status = "not_indexed", 409


class HostNotAllowed(RagError):
    """A request addressed to a host name this server does not answer to (DNS rebinding, or a missing
    RAG_ALLOWED_HOSTS entry)."""

    code, status = "host_not_allowed", 403


class ClientDisconnected(RagError):
    """The client left before its answer was ready; what it started was cancelled. Nobody reads the reply."""

    code, status = "client_disconnected", 499  # nginx's "client closed request"


class UnknownModel(RagError):
    """A chat endpoint was asked for a model this service does not offer (it offers one per collection)."""

    code, status = "unknown_model", 404


class NotFound(RagError):
    """A path this service does not offer (e.g. Ollama's model-management routes on its facade)."""

    code, status = "not_found", 404


class Unauthorized(RagError):
    """No API key, or an unknown one (RAG_API_KEYS): 401 with WWW-Authenticate: Bearer."""

    code, status = "unauthorized", 401


class AdminOnly(RagError):
    """A valid API key that is not an admin key (RAG_ADMIN_KEYS), on a route that changes the index."""

    code, status = "admin_key_required", 403


class PayloadTooLarge(RagError):
    code, status = "payload_too_large", 413


class SyncRunning(RagError):
    """A sync was asked for while another runs: one at a time."""

    code, status = "sync_running", 409


class ExposedWithoutKeys(RagError):
    """rag serve asked to listen beyond loopback with no API key: it refuses to start."""

    code, status = "exposed_without_keys", 500
