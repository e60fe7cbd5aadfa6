"""bench/scale_bench.py's child: `rag ingest`'s code path on one folder, its progress timed; prints one JSON line."""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

from ingest.run import ingest_folder
from rag.config import Settings
from rag.index.chroma import ChromaStore


def main() -> None:
    folder = Path(sys.argv[1])
    settings = Settings()
    marks: list[float] = []
    started = time.perf_counter()

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
    # chunks/s in each tenth of the files done (files are of about equal size)
    tenths = []
    if len(marks) >= 10 and embedded:
        per_file = embedded / len(marks)
        step = len(marks) / 10
        edges = [0.0] + [marks[min(len(marks) - 1, round(step * (i + 1)) - 1)] for i in range(10)]
        tenths = [per_file * step / max(edges[i + 1] - edges[i], 1e-9) for i in range(10)]
    print(json.dumps({
        "files": len(marks), "embedded": embedded, "chunks": ChromaStore.open(settings).count(),
        "tenths": tenths, "seconds": summary.seconds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }))


if __name__ == "__main__":
    main()
