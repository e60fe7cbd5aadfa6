"""A real `rag serve` over data/docs on the bundled models, shared by the client and browser tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ingest.run import ingest_folder
from tests.support.helpers import make_settings
from tests.support.servers import serve_process

DOCS = Path(__file__).resolve().parents[2] / "data" / "docs"


@pytest.fixture(scope="session")
def docs_service(tmp_path_factory: pytest.TempPathFactory, real_engine: str) -> Iterator[str]:
    """Base URL of `rag serve` (a real process, temperature 0) over data/docs, on the real engine."""
    tmp = tmp_path_factory.mktemp("docs-service")
    settings = make_settings(tmp, real_engine)
    assert ingest_folder(DOCS, settings).summary is not None
    with serve_process(settings.storage_dir, real_engine, RAG_TEMPERATURE="0") as (base, _log):
        yield base
