"""Engine settings: Ollama's own variables (OLLAMA_HOST, OLLAMA_NUM_PARALLEL, ...) and RAG_ENGINE_*."""

from __future__ import annotations

import os
from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_core import PydanticUndefined
from pydantic_settings import BaseSettings, SettingsConfigDict

from rag.config import parse_ollama_host


def _ollama(name: str) -> AliasChoices:
    return AliasChoices(name, name.lower())


def _shown(default: object) -> str:
    if isinstance(default, bool):
        default = int(default)  # as it is written in the environment: 1 or 0
    return "" if default in ("", PydanticUndefined) else f" [default: {default}]"


class EngineSettings(BaseSettings):
    """How the local engine listens, queues and runs; built once by the entry point and passed in."""

    model_config = SettingsConfigDict(env_prefix="RAG_ENGINE_", env_file=".env", extra="ignore", populate_by_name=True)

    ollama_host: str = Field(
        default="127.0.0.1:11434",
        validation_alias=_ollama("OLLAMA_HOST"),
        description="Where to listen: [http://]host[:port], as Ollama reads it.",
    )
    num_parallel: int = Field(
        default=1,
        ge=1,
        le=64,
        validation_alias=_ollama("OLLAMA_NUM_PARALLEL"),
        description="Requests each model runs at once (one runner process each).",
    )
    max_queue: int = Field(
        default=512,
        ge=0,
        validation_alias=_ollama("OLLAMA_MAX_QUEUE"),
        description="Requests that may wait for a slot before the engine answers 503.",
    )
    keep_alive: str = Field(
        default="5m",
        validation_alias=_ollama("OLLAMA_KEEP_ALIVE"),
        description="How long an idle model stays loaded when a request does not say (a duration or seconds).",
    )
    context_length: int = Field(
        default=2048,
        ge=16,
        validation_alias=_ollama("OLLAMA_CONTEXT_LENGTH"),
        description="num_ctx used when a request does not set one (Ollama's default).",
    )
    backend: Literal["real", "deterministic"] = Field(
        default="real",
        description="real: the bundled models; deterministic: a fast stand-in for protocol and scale tests.",
    )
    threads: int = Field(
        default_factory=lambda: os.cpu_count() or 1, ge=1, description="CPU threads per model (default: all cores)."
    )
    embed_runtime: Literal["onnx", "torch"] = Field(
        default="onnx",
        description="all-minilm on ONNX Runtime with int8 weights (made by `make install`; torch if it is missing), "
        "or on sentence-transformers fp32 torch.",
    )
    token_delay: float = Field(
        default=0.0, ge=0.0, description="Deterministic backend only: seconds per generated token."
    )
    embed_delay: float = Field(
        default=0.0, ge=0.0, description="Deterministic backend only: seconds per /api/embed call."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(default="INFO", description="Engine log level.")
    allowed_hosts: str = Field(
        default="",
        description="Host names accepted besides loopback ones, comma-separated (`*.lan`, `*` for any): "
        "a guard against DNS rebinding.",
    )
    self_check: bool = Field(
        default=True,
        description="Generate once from a prompt of 512+ tokens in a runner before listening; exit 2 if it fails.",
    )
    test_faults: bool = Field(
        default=False,
        description="Tests only: a prompt holding <<runner-fault:SIGSEGV>> (or another signal) kills its runner.",
    )
    test_busy: int = Field(
        default=0,
        ge=0,
        description="Tests only: answer 503 (server busy) to the first N requests to /api/chat, /api/generate and "
        "/api/embed, as a full queue does (clients' retries are tested with it).",
    )
    test_fault_long_prompt: str = Field(
        default="",
        description="Tests only, with RAG_ENGINE_TEST_FAULTS: the signal a runner dies of on prompts of 512+ tokens "
        "(SIGILL mimics a llama.cpp build using instructions this CPU faults on).",
    )

    @classmethod
    def variables(cls) -> list[tuple[str, str]]:
        """(environment variable, what it sets) for every setting, in declaration order: the help's list."""
        rows = []
        for name, info in cls.model_fields.items():
            alias = info.validation_alias
            variable = alias.choices[0] if isinstance(alias, AliasChoices) else f"RAG_ENGINE_{name.upper()}"
            rows.append((str(variable), f"{info.description or ''}{_shown(info.default)}"))
        return rows

    @property
    def bind(self) -> tuple[str, int]:
        """(host, port) to listen on, by Ollama's OLLAMA_HOST rules."""
        _, host, port = parse_ollama_host(self.ollama_host)
        return host, port
