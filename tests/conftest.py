"""Shared fixtures: engines speaking Ollama's API on loopback, one per backend, for the whole session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.servers import running_engine


@pytest.fixture(scope="session")
def real_engine() -> Iterator[str]:
    """Base URL of an engine running the real bundled models (SmolLM2-135M, all-MiniLM-L6-v2)."""
    with running_engine("real") as url:
        yield url


@pytest.fixture(scope="session")
def fast_engine() -> Iterator[str]:
    """Base URL of an engine on the deterministic backend: same API, instant stand-in models."""
    with running_engine("deterministic") as url:
        yield url
