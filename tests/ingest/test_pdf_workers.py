"""PDF extraction workers on real PDFs and real child processes: one worker serves many files, and a
worker that times out, runs out of memory, dies or has served its share is replaced without losing the
next file."""

from __future__ import annotations

import os
import resource
import signal
import threading
import time
from pathlib import Path

import pytest

from ingest import pdf_workers
from ingest.loaders import LoadError, LoadLimits, Page, load
from ingest.pdf_workers import PdfWorkers
from tests.ingest.test_loaders import pathological_pdf, write_pdf
from tests.support.procs import children, processes


def alive(pid: int) -> bool:
    found = processes().get(pid)
    return found is not None and found.state != "Z"


def pids(workers: PdfWorkers) -> list[int]:
    return [w.proc.pid for w in workers._all]


def pages(result: dict[str, object]) -> list[list[object]]:
    assert "error" not in result, result
    return result["pages"]  # type: ignore[return-value]


def extract_in_background(workers: PdfWorkers, path: Path) -> tuple[threading.Thread, dict[str, object]]:
    """Start extracting `path` on a thread; return once a worker has been started for it."""
    result: dict[str, object] = {}
    reader = threading.Thread(target=lambda: result.update(workers.extract(path)))
    reader.start()
    deadline = time.monotonic() + 10
    while not workers._all and time.monotonic() < deadline:
        time.sleep(0.05)
    return reader, result


@pytest.fixture
def pdfs(tmp_path: Path) -> list[Path]:
    return [write_pdf(tmp_path / f"doc{i}.pdf", [f"Document {i} page one.", f"Document {i} page two."])
            for i in range(6)]


def test_one_worker_reads_many_files(pdfs: list[Path]) -> None:
    with PdfWorkers(memory_mb=1024, timeout_s=30) as workers:
        for i, path in enumerate(pdfs):
            assert [p[0] for p in pages(workers.extract(path))] == [1, 2]
            assert f"Document {i} page two." in pages(workers.extract(path))[1][1]
        assert workers.started == 1


def test_workers_are_recycled(pdfs: list[Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pdf_workers, "RECYCLE_AFTER", 2)
    with PdfWorkers(memory_mb=1024, timeout_s=30) as workers:
        for path in pdfs:
            pages(workers.extract(path))
        assert workers.started == 3
        assert len(workers._all) == 1  # the retired ones are stopped, not kept


def test_timeout_kills_the_worker_and_the_next_file_is_read(tmp_path: Path, pdfs: list[Path]) -> None:
    slow = pathological_pdf(tmp_path / "slow.pdf")
    with PdfWorkers(memory_mb=1024, timeout_s=1) as workers:
        pages(workers.extract(pdfs[0]))
        first = pids(workers)[0]
        started = time.monotonic()
        assert workers.extract(slow) == {"error": "timeout"}
        assert time.monotonic() - started < 10
        assert not alive(first)
        assert len(pages(workers.extract(pdfs[1]))) == 2
        assert workers.started == 2


def test_out_of_memory_retries_on_a_fresh_worker_then_reports(tmp_path: Path, pdfs: list[Path]) -> None:
    huge = pathological_pdf(tmp_path / "huge.pdf")
    with PdfWorkers(memory_mb=128, timeout_s=60) as workers:
        pages(workers.extract(pdfs[0]))
        assert workers.extract(huge)["error"] == "memory"
        assert workers.started == 2  # the used worker, then a fresh one: the file really is too big
        assert len(pages(workers.extract(pdfs[1]))) == 2
        assert workers.started == 3  # the worker that ran out of memory was not trusted again


def test_a_worker_killed_between_files_is_replaced(pdfs: list[Path]) -> None:
    with PdfWorkers(memory_mb=1024, timeout_s=30) as workers:
        pages(workers.extract(pdfs[0]))
        os.kill(pids(workers)[0], signal.SIGKILL)
        time.sleep(0.2)
        assert len(pages(workers.extract(pdfs[1]))) == 2
        assert workers.started == 2


def test_a_worker_killed_mid_file_is_reported_with_its_exit_code(tmp_path: Path) -> None:
    slow = pathological_pdf(tmp_path / "slow.pdf")
    with PdfWorkers(memory_mb=1024, timeout_s=60) as workers:
        reader, result = extract_in_background(workers, slow)
        time.sleep(1.0)  # in pypdf by now
        os.kill(pids(workers)[0], signal.SIGKILL)
        reader.join(timeout=20)
        assert result["error"] == "died"
        assert result["code"] == -signal.SIGKILL


def test_died_message_names_the_file_and_the_memory_setting(tmp_path: Path) -> None:
    """Through load(): the user's message for a worker that died."""
    slow = pathological_pdf(tmp_path / "slow.pdf")
    with PdfWorkers(memory_mb=1024, timeout_s=60) as workers:
        killer = threading.Timer(1.5, lambda: os.kill(pids(workers)[0], signal.SIGKILL))
        killer.start()
        with pytest.raises(LoadError) as caught:
            load(slow, tmp_path, LoadLimits(timeout_s=60), workers)
        killer.join()
    message = str(caught.value)
    assert message.startswith("slow.pdf: the PDF extraction process died (exit code -9")
    assert "RAG_FILE_MEMORY_MB" in message


def test_close_stops_every_worker(pdfs: list[Path]) -> None:
    workers = PdfWorkers(memory_mb=1024, timeout_s=30, size=2)
    done: list[dict[str, object]] = []
    threads = [threading.Thread(target=lambda p=p: done.append(workers.extract(p))) for p in pdfs[:2]]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    running = pids(workers)
    assert len(running) == workers.started
    assert 1 <= len(running) <= 2
    assert all(alive(pid) for pid in running)
    workers.close()
    assert not any(alive(pid) for pid in running)
    assert [len(pages(r)) for r in done] == [2, 2]


def test_quick_files_from_two_threads_share_one_worker(pdfs: list[Path]) -> None:
    """A second worker costs a process start; quick PDFs never wait SPARE_AFTER for the first one."""
    with PdfWorkers(memory_mb=1024, timeout_s=30, size=2) as workers:
        pages(workers.extract(pdfs[0]))  # started and warm: each file now takes milliseconds
        done: list[dict[str, object]] = []
        threads = [threading.Thread(target=lambda p=p: done.extend(workers.extract(p) for _ in range(5)))
                   for p in pdfs[1:3]]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert [len(pages(r)) for r in done] == [2] * 10
        assert workers.started == 1


def test_a_slow_file_gets_the_others_a_second_worker(tmp_path: Path, pdfs: list[Path]) -> None:
    slow = pathological_pdf(tmp_path / "slow.pdf")
    with PdfWorkers(memory_mb=1024, timeout_s=2, size=2) as workers:
        reader, result = extract_in_background(workers, slow)
        started = time.monotonic()
        assert len(pages(workers.extract(pdfs[0]))) == 2
        assert time.monotonic() - started < 1.5  # not after the slow file's 2 s time limit
        assert workers.started == 2
        reader.join(timeout=20)
        assert result == {"error": "timeout"}


def test_a_process_with_over_1024_open_files_still_reads_pdfs(pdfs: list[Path]) -> None:
    """A long test session or server holds many files; the worker's pipe then gets a descriptor that
    select() refuses (seen in CI: 'filedescriptor out of range in select()')."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 1100
    assert hard == resource.RLIM_INFINITY or hard >= need + 200, f"RLIMIT_NOFILE hard limit {hard} is too low"
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, need + 200), hard))
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(need)]
    try:
        with PdfWorkers(memory_mb=1024, timeout_s=30) as workers:
            assert len(pages(workers.extract(pdfs[0]))) == 2
            assert pids(workers)
            assert workers._all[0]._stdout >= 1024
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_load_without_workers_starts_and_stops_its_own(pdfs: list[Path], tmp_path: Path) -> None:
    before = set(children(os.getpid()))
    assert load(pdfs[0], tmp_path, LoadLimits()).pages[0] == Page(1, "Document 0 page one.")
    assert set(children(os.getpid())) <= before


def test_an_ingest_of_many_pdfs_starts_a_worker_per_loader_and_leaves_none(
    tmp_path: Path, fast_engine: str
) -> None:
    """Twelve PDFs, a corrupt one and a text file through `ingest_folder` (deterministic engine): every
    good PDF is stored, at most LOADERS workers are started, and none outlives the run."""
    from ingest.run import ingest_folder
    from ingest.sync import LOADERS
    from rag.index.chroma import ChromaStore
    from tests.support.helpers import make_settings

    root = tmp_path / "docs"
    root.mkdir()
    for i in range(12):
        write_pdf(root / f"manual{i:02d}.pdf", [f"Pump {i} runs at {40 + i} degrees.", f"Valve {i} is blue."])
    (root / "broken.pdf").write_bytes(b"%PDF-1.4 not really")
    (root / "notes.txt").write_text("Notes on the pumps.", encoding="utf-8")
    before = set(children(os.getpid()))
    summary = ingest_folder(root, make_settings(tmp_path, fast_engine)).summary
    assert summary is not None
    assert [s for s, _ in summary.failures] == ["broken.pdf"]
    sources = dict(ChromaStore.open(make_settings(tmp_path, fast_engine)).sources())
    assert set(sources) == {f"manual{i:02d}.pdf" for i in range(12)} | {"notes.txt"}
    assert 1 <= summary.pdf_workers <= LOADERS
    assert set(children(os.getpid())) <= before
