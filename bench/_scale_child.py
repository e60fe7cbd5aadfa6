"""bench/scale_bench.py's child: `rag ingest`'s code path on one folder, its progress timed; prints one JSON line.

Besides chunks/s per tenth of the files, it times the store's writes in each tenth (Chroma's vector upsert,
the chunk texts, the keyword tokens), so a slowdown as the store grows can be put where it is. The timing
wraps those methods in this child only; nothing else of the run changes.
"""

from __future__ import annotations

import functools
import json
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ingest.run import ingest_folder
from rag.config import Settings
from rag.index.chroma import ChromaStore
from rag.index.texts import TextStore
from rag.index.token_store import KeywordWriter

STAGES = {"store": (ChromaStore, "upsert"), "texts": (TextStore, "put"), "keywords": (KeywordWriter, "put")}


def main() -> None:
    folder = Path(sys.argv[1])
    settings = Settings()
    marks: list[float] = []
    spans: list[tuple[float, str, float]] = []  # (ended at, stage, seconds)
    started = time.perf_counter()

    def timed(stage: str, method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(method)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                now = time.perf_counter()
                spans.append((now - started, stage, now - t))
        return wrapper

    for stage, (cls, name) in STAGES.items():
        setattr(cls, name, timed(stage, getattr(cls, name)))

    def progress_factory(total: int):  # type: ignore[no-untyped-def]
        def advance(n: int) -> None:
            marks.extend([time.perf_counter() - started] * n)
        return advance

    result = ingest_folder(folder, settings, progress_factory=progress_factory)
    summary = result.summary
    assert summary is not None
    if summary.failed:
        raise SystemExit(f"{summary.failed} files failed: {summary.failures[:3]}")
    embedded = summary.chunks_written
    # chunks/s in each tenth of the files done (files are of about equal size), and seconds in each stage
    tenths: list[float] = []
    stages: dict[str, list[float]] = {}
    if len(marks) >= 10 and embedded:
        per_file = embedded / len(marks)
        step = len(marks) / 10
        edges = [0.0] + [marks[min(len(marks) - 1, round(step * (i + 1)) - 1)] for i in range(10)]
        tenths = [per_file * step / max(edges[i + 1] - edges[i], 1e-9) for i in range(10)]
        for stage in STAGES:
            stages[stage] = [sum(s for at, name, s in spans if name == stage and edges[i] < at <= edges[i + 1])
                             for i in range(10)]
        stages["wall"] = [edges[i + 1] - edges[i] for i in range(10)]
    print(json.dumps({
        "files": len(marks), "embedded": embedded, "chunks": ChromaStore.open(settings).count(),
        "tenths": tenths, "stages": stages, "seconds": summary.seconds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }))


if __name__ == "__main__":
    main()
