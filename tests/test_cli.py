"""The `rag` command on real trees of files, bad ones included, run as a user runs it."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
from fpdf import FPDF

from rag.engine.config import EngineSettings
from tests.support.helpers import CHINESE, ENGLISH, dead_url, write


def rag(tmp_path: Path, url: str, *args: str, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
    environ = {
        **os.environ,
        "OLLAMA_HOST": url,
        "RAG_STORAGE_DIR": str(tmp_path / "storage"),
        "RAG_MIN_SCORE": "0",
        **env,
    }
    return subprocess.run(
        [sys.executable, "-m", "rag", *args],
        env=environ,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def two_page_pdf(path: Path) -> Path:
    pdf = FPDF()
    for text in ("First page: the valve is red.", "Second page: the lever is green."):
        pdf.add_page()
        pdf.set_font("helvetica", size=12)
        pdf.multi_cell(0, 8, text)
    path.parent.mkdir(parents=True, exist_ok=True)
    pdf.output(str(path))
    return path


@pytest.fixture
def messy(tmp_path: Path) -> Path:
    root = tmp_path / "docs"
    write(root / "good.md", ENGLISH)
    write(root / "zh.txt", CHINESE)
    two_page_pdf(root / "manual.pdf")
    write(root / "corrupt.pdf", b"%PDF-1.7\n1 0 obj << /Type /Catalog >> garbage")
    write(root / "binary.txt", bytes(range(256)) * 8)
    write(root / "legacy.txt", "旧系统的说明文件。".encode("gb18030"))
    write(root / "empty.md", "")
    write(root / ".hidden.md", "secret")
    write(root / "image.png", b"\x89PNG\r\n")
    return root


def test_ingest_reports_each_bad_file_and_exits_1(tmp_path, messy, fast_engine):
    result = rag(tmp_path, fast_engine, "ingest", str(messy))
    assert result.returncode == 1, result.stderr
    for name in ("corrupt.pdf", "binary.txt", "empty.md"):
        assert name in result.stderr, name
    assert "failed: legacy.txt" not in result.stderr  # GB18030: detected and read
    assert "4 added" in result.stdout
    assert "3 failed" in result.stdout
    assert "2 skipped" in result.stdout
    assert "Traceback" not in result.stderr
    status = rag(tmp_path, fast_engine, "status")
    assert "4 files" in status.stdout


def test_ingest_clean_folder_exits_0_and_second_run_does_nothing(tmp_path, fast_engine):
    root = tmp_path / "docs"
    write(root / "good.md", ENGLISH)
    first = rag(tmp_path, fast_engine, "ingest", str(root))
    assert first.returncode == 0, first.stderr
    second = rag(tmp_path, fast_engine, "ingest", str(root))
    assert second.returncode == 0
    assert "1 unchanged" in second.stdout
    assert "embedding calls: 0" in second.stdout


def test_damaged_keyword_tokens_stop_an_ingest_with_the_command_that_mends_them(tmp_path, fast_engine):
    root = tmp_path / "docs"
    write(root / "good.md", ENGLISH)
    write(root / "zh.txt", CHINESE)
    assert rag(tmp_path, fast_engine, "ingest", str(root)).returncode == 0
    tokens = sqlite3.connect(tmp_path / "storage" / "keyword-documents" / "tokens.sqlite3")
    tokens.execute("UPDATE chunks SET tokens = ?", (np.asarray([99999], dtype="<i4").tobytes(),))
    tokens.commit()
    tokens.close()
    write(root / "good.md", ENGLISH + "\n\nOne more sentence about the pump.\n")
    damaged = rag(tmp_path, fast_engine, "ingest", str(root))
    assert damaged.returncode == 2
    assert "keyword tokens" in damaged.stderr
    assert "rag ingest DIR --reindex-keywords" in damaged.stderr
    assert "Traceback" not in damaged.stderr
    mended = rag(tmp_path, fast_engine, "ingest", "--reindex-keywords", str(root))
    assert mended.returncode == 0, mended.stderr
    assert "embedding calls: 0" in mended.stdout
    check = rag(tmp_path, fast_engine, "check")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "agree" in check.stdout


def test_dry_run_lists_the_plan(tmp_path, messy, fast_engine):
    result = rag(tmp_path, fast_engine, "ingest", "--dry-run", str(messy))
    assert result.returncode == 0, result.stderr
    assert "add     good.md" in result.stdout
    assert "nothing was changed" in result.stdout
    assert not (tmp_path / "storage" / "manifest-documents.json").exists()


def test_missing_folder_and_ollama_down_are_one_line_errors(tmp_path, fast_engine):
    missing = rag(tmp_path, fast_engine, "ingest", str(tmp_path / "nope"))
    assert missing.returncode == 2
    assert "does not exist" in missing.stderr
    root = tmp_path / "docs"
    write(root / "good.md", ENGLISH)
    down = rag(tmp_path, dead_url(), "ingest", str(root))
    assert down.returncode == 2
    assert "cannot reach Ollama" in down.stderr
    assert "Traceback" not in down.stderr


def test_bad_setting_names_the_variable(tmp_path, fast_engine):
    result = rag(tmp_path, fast_engine, "status", RAG_TOP_K="many")
    assert result.returncode == 2
    assert "RAG_TOP_K" in result.stderr


def test_ask_prints_answer_and_numbered_sources(tmp_path, fast_engine):
    root = tmp_path / "docs"
    two_page_pdf(root / "manual.pdf")
    assert rag(tmp_path, fast_engine, "ingest", str(root)).returncode == 0
    result = rag(tmp_path, fast_engine, "ask", "What colour is the lever?")
    assert result.returncode == 0, result.stderr
    assert "Sources:" in result.stdout
    assert "[1] manual.pdf, page" in result.stdout


def test_ask_with_only_spaces_is_a_one_line_error(tmp_path, fast_engine):
    write(tmp_path / "docs" / "good.md", ENGLISH)
    assert rag(tmp_path, fast_engine, "ingest", str(tmp_path / "docs")).returncode == 0
    for blank in ("   ", "\u3000"):
        result = rag(tmp_path, fast_engine, "ask", blank)
        assert result.returncode == 2
        assert result.stderr == "error: question: must contain more than spaces\n"


def test_help_and_version_work_whatever_the_settings_hold(tmp_path):
    for args in (["--help"], ["engine", "--help"], ["ingest", "--help"], ["status", "--help"]):
        result = rag(tmp_path, dead_url(), *args, RAG_TOP_K="0")
        assert result.returncode == 0, (args, result.stderr)
        assert "Usage: rag" in result.stdout
    version = rag(tmp_path, dead_url(), "--version", RAG_TOP_K="0")
    assert version.returncode == 0, version.stderr
    assert version.stdout == f"rag, version {metadata.version('ollama-rag')}\n"


def test_engine_help_lists_every_variable_the_engine_reads(tmp_path):
    result = rag(tmp_path, dead_url(), "engine", "--help", RAG_TOP_K="0")
    assert result.returncode == 0, result.stderr
    assert "OLLAMA_HOST" in result.stdout
    for variable, _ in EngineSettings.variables():
        assert variable in result.stdout, variable


def test_a_command_that_needs_an_invalid_setting_is_one_error_line(tmp_path):
    result = rag(tmp_path, dead_url(), "status", RAG_TOP_K="0")
    assert result.returncode == 2
    assert result.stderr.startswith("error: invalid settings: RAG_TOP_K: ")
    assert len(result.stderr.splitlines()) == 1


def test_the_engine_names_its_own_invalid_variable_in_one_line(tmp_path):
    result = rag(tmp_path, dead_url(), "engine", OLLAMA_NUM_PARALLEL="0", RAG_TOP_K="0")
    assert result.returncode == 2
    assert result.stderr.startswith("error: invalid settings: OLLAMA_NUM_PARALLEL: ")
    assert len(result.stderr.splitlines()) == 1


def test_python_m_rag_engine_names_an_invalid_variable_in_one_line(tmp_path):
    env = {**os.environ, "RAG_ENGINE_THREADS": "0"}
    result = subprocess.run([sys.executable, "-m", "rag.engine"], env=env, cwd=tmp_path, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr == "error: invalid settings: RAG_ENGINE_THREADS: Input should be greater than or equal to 1\n"
