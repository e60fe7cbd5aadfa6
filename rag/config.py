"""Settings: the one object built at an entry point and passed to everything else."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

OLLAMA_DEFAULT_PORT = 11434


def parse_ollama_host(value: str | None) -> tuple[str, str, int]:
    """Split OLLAMA_HOST into (scheme, host, port) with Ollama's own rules (envconfig.Host).

    `host`, `host:port`, `scheme://host[:port]`; an empty value means 127.0.0.1:11434; a scheme
    given without a port means that scheme's port (80/443), as in Ollama.
    """
    raw = (value or "").strip()
    default_port = OLLAMA_DEFAULT_PORT
    if "://" in raw:
        scheme, _, hostport = raw.partition("://")
        default_port = {"http": 80, "https": 443}.get(scheme, OLLAMA_DEFAULT_PORT)
    else:
        scheme, hostport = "http", raw
    hostport = hostport.split("/", 1)[0]
    try:  # a bare IP address, IPv6 included, has no port
        return scheme, str(ipaddress.ip_address(hostport.strip("[]"))), default_port
    except ValueError:
        pass
    parts = urlsplit(f"//{hostport}")
    try:
        host, port = parts.hostname, parts.port
    except ValueError:  # a port that is not a number: Ollama warns and uses the default
        host, port = hostport.rsplit(":", 1)[0].strip("[]"), None
    return scheme, host or "127.0.0.1", port if port is not None else default_port


def format_host_url(scheme: str, host: str, port: int) -> str:
    try:
        if ipaddress.ip_address(host).version == 6:
            host = f"[{host}]"
    except ValueError:
        pass
    return f"{scheme}://{host}:{port}"


# The retrieval modes, named once: here, as settings sit below everything (rag.answer.models re-exports it).
Mode = Literal["hybrid", "vector", "keyword"]
# How an answer is made (rag.answer.models explains them): quoted evidence, the model as is, or checked.
AnswerMode = Literal["extract", "generate", "auto"]


class Settings(BaseSettings):
    """Everything configurable, from the environment (RAG_*, OLLAMA_HOST) or a `.env` file."""

    model_config = SettingsConfigDict(
        env_prefix="RAG_", env_file=".env", extra="ignore", populate_by_name=True
    )

    ollama_host: str = Field(
        default="127.0.0.1:11434",
        validation_alias=AliasChoices("OLLAMA_HOST", "RAG_OLLAMA_HOST", "ollama_host"),
        description="Where Ollama (or the bundled local engine) listens; Ollama's own variable.",
    )
    chat_model: str = "smollm2:135m"
    embed_model: str = "all-minilm"
    storage_dir: Path = Path("storage")
    chroma_host: str | None = Field(default=None, description="Use a Chroma server instead of storage/.")
    chroma_port: int = 8000
    collection: str = "documents"
    chunk_size: int = Field(default=200, ge=16, le=8192, description="Chunk size in tokens.")
    chunk_overlap: int = Field(default=30, ge=0, description="Overlap between chunks in tokens.")
    embed_batch_size: int = Field(default=32, ge=1, le=1024)
    top_k: int = Field(default=4, ge=1, le=50)
    request_timeout: float = Field(default=300.0, gt=0, description="Seconds; a CPU model's first load is slow.")
    health_timeout: float = Field(
        default=5.0, gt=0, description="Seconds for health checks and model listings: a stalled Ollama is reported."
    )
    embed_retries: int = Field(
        default=5, ge=0, le=20, description="Embedding calls retried on a connection error, timeout or 503."
    )
    embed_retry_backoff: float = Field(
        default=1.0, ge=0.0, description="Seconds before the first retry; doubled for each next one."
    )
    keep_alive: str = "30m"
    num_ctx: int = Field(
        default=4096, ge=256,
        description="Kept constant: Ollama reloads on change. Room for top_k 4 Chinese chunks (about 1,450 "
        "SmolLM2 tokens) with a wide margin: at 2048 the engine cuts prompts past 1536.",
    )
    temperature: float = Field(default=0.1, ge=0.0, le=2.0)
    seed: int = 42
    num_predict: int = Field(default=256, ge=1)
    answer_mode: AnswerMode = Field(
        default="auto",
        description="extract: source sentences, no chat call; generate: the model as is; auto: the model's "
        "sentences while each is supported by a source, else the source sentences.",
    )
    min_score: float = Field(
        default=0.2, description="Below this cosine a chunk without a term of the question is not given to the model."
    )
    retrieval_mode: Mode = Field(
        default="hybrid", description="hybrid: BM25 keywords fused with vectors; vector or keyword alone."
    )
    fusion: Literal["adaptive", "weighted", "rrf"] = Field(
        default="adaptive", description="How hybrid mode merges the two rankings (chosen on bench/retrieval_bench.py)."
    )
    fusion_sharpness: float = Field(
        default=2.0, ge=0.0, le=10.0,
        description="Adaptive fusion: how much more the side whose best hit stands out counts (0: agreement alone).",
    )
    rrf_k: int = Field(default=60, ge=1, description="Reciprocal-rank fusion: 1 / (rrf_k + rank).")
    fusion_vector_weight: float = Field(
        default=0.5, ge=0.0, le=1.0, description="Weighted fusion: share of the normalised vector score."
    )
    retrieval_candidates: int = Field(
        default=20, ge=1, le=200, description="Chunks each side of hybrid retrieval ranks before fusion."
    )
    coverage_min_matched: float = Field(
        default=0.4, ge=0.0, le=1.0,
        description="Covered when one source holds this share of the question's keyword weight, or both sides "
        "rank one source in their first three; else 'not in the documents' (0: never decline).",
    )
    file_timeout: float = Field(default=60.0, gt=0, description="Seconds allowed to extract one file.")
    file_memory_mb: int = Field(default=1024, ge=64, description="Memory allowed to extract one file.")
    max_file_mb: int = Field(default=200, ge=1, description="Larger files are skipped and reported.")
    host: str = "127.0.0.1"
    port: int = 8080
    allowed_hosts: str = Field(
        default="",
        description="Host names rag serve answers besides loopback ones, comma-separated; * allows any.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    model_name: str = Field(
        default="rag", description="The model the OpenAI- and Ollama-compatible endpoints offer: these documents."
    )
    chat_sources: bool = Field(
        default=True, description="Append a Sources block (file, page) to answers on those endpoints."
    )
    # -- running it for a team (README: "Running it for a team") ---------------------------------------
    api_keys: str = Field(
        default="", description="Keys clients send as `Authorization: Bearer KEY`, comma-separated; every route "
        "but /livez then needs one.",
    )
    api_keys_file: Path | None = Field(default=None, description="A file of API keys, one a line (# comments).")
    admin_keys: str = Field(
        default="", description="Keys that may also start a sync (POST /sync), comma-separated; also API keys."
    )
    cors_origins: str = Field(
        default="", description="Origins a browser may call the API from, comma-separated; none by default."
    )
    max_body_bytes: int = Field(
        default=1_000_000, ge=1024, description="Larger request bodies are refused with 413."
    )
    log_format: Literal["text", "json"] = Field(default="text", description="json: one JSON object a log line.")
    ollama_retries: int = Field(
        default=3, ge=0, le=20,
        description="Ollama calls retried on a refused connection, 503 (busy) or 429, with backoff and jitter.",
    )
    ollama_retry_backoff: float = Field(
        default=0.5, ge=0.0, description="Seconds before the first of those retries; doubled each next one."
    )
    docs_dir: Path | None = Field(default=None, description="The folder POST /sync and `rag serve --watch` sync.")
    watch: bool = Field(default=False, description="Sync RAG_DOCS_DIR whenever a file in it changes (--watch DIR).")
    watch_debounce: float = Field(
        default=2.0, gt=0, description="rag serve --watch: seconds of quiet after a change before it syncs."
    )
    insecure_no_auth: bool = Field(
        default=False, description="Serve beyond loopback with no API key (`rag serve --insecure-no-auth`)."
    )

    @field_validator("chroma_host")
    @classmethod
    def _empty_is_none(cls, v: str | None) -> str | None:
        return v or None

    @model_validator(mode="after")
    def _overlap_below_size(self) -> Settings:
        if self.chunk_overlap >= self.chunk_size:
            raise ValueError(
                f"chunk_overlap ({self.chunk_overlap}) must be smaller than chunk_size ({self.chunk_size})"
            )
        return self

    @field_validator("api_keys_file")
    @classmethod
    def _keys_file_readable(cls, v: Path | None) -> Path | None:
        if v is not None and not v.is_file():
            raise ValueError(f"{v} is not a readable file; give a file of keys, one a line")
        return v

    @field_validator("watch")
    @classmethod
    def _watch_needs_a_folder(cls, v: bool, info: ValidationInfo) -> bool:
        if v and info.data.get("docs_dir") is None:
            raise ValueError("there is no folder to watch: set RAG_DOCS_DIR, or use rag serve --watch DIR")
        return v

    @property
    def ollama_url(self) -> str:
        """The first Ollama host: where messages point, and the base every client is built with."""
        return self.ollama_urls[0]

    @property
    def ollama_urls(self) -> list[str]:
        """Every Ollama host in OLLAMA_HOST (comma-separated: several nodes, tried in turn by rag.ollama)."""
        urls = []
        for value in [v for v in self.ollama_host.split(",") if v.strip()] or [""]:
            scheme, host, port = parse_ollama_host(value)
            if host in ("0.0.0.0", "::"):  # a bind-all address is not somewhere a client can connect to
                host = "127.0.0.1"
            urls.append(format_host_url(scheme, host, port))
        return list(dict.fromkeys(urls))

    def key_set(self, admin: bool = False) -> frozenset[str]:
        """The API keys (RAG_API_KEYS, RAG_API_KEYS_FILE, and the admin keys), or the admin keys alone."""
        keys = _split(self.admin_keys)
        if not admin:
            keys += _split(self.api_keys)
            if self.api_keys_file is not None:
                lines = self.api_keys_file.read_text(encoding="utf-8").splitlines()
                keys += [k.strip() for k in lines if k.strip() and not k.lstrip().startswith("#")]
        return frozenset(keys)

    # -- storage paths: every file and folder under storage_dir is named here, and only here ----------

    @property
    def chroma_path(self) -> Path:
        """The embedded Chroma store (unused when RAG_CHROMA_HOST names a server)."""
        return self.storage_dir / "chroma"

    @property
    def keyword_path(self) -> Path:
        """The keyword index (BM25 files and per-chunk tokens); beside the manifest, also when Chroma is a server."""
        return self.storage_dir / f"keyword-{self.collection}"

    @property
    def texts_path(self) -> Path:
        """Chunk texts by id (rag.index.texts); beside the manifest, also when Chroma is a server."""
        return self.storage_dir / f"texts-{self.collection}.sqlite3"

    @property
    def manifest_path(self) -> Path:
        """What was ingested from which file (ingest.manifest)."""
        return self.storage_dir / f"manifest-{self.collection}.json"

    @property
    def journal_path(self) -> Path:
        """Chunk ids an ingest may have written that no file owns yet (ingest.journal)."""
        return self.storage_dir / f"journal-{self.collection}.log"

    @property
    def lock_path(self) -> Path:
        """One writer per store (rag.index.lock); its owner is named in the same name with `.owner`."""
        return self.storage_dir / "rag.lock"


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]
