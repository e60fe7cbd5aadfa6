"""Picks the backend the settings name: the real models or the deterministic stand-in."""

from __future__ import annotations

from rag.engine.config import EngineSettings
from rag.engine.deterministic import DeterministicBackend
from rag.engine.protocol import Backend
from rag.engine.real import RealBackend


def make_backend(settings: EngineSettings) -> Backend:
    # Both modules are cheap to import: the real one loads llama.cpp and torch only when a model loads.
    if settings.backend == "deterministic":
        return DeterministicBackend(settings)
    return RealBackend(settings)
