"""`rag eval run / generate / validate` run as a user runs them, on the deterministic engine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from matplotlib import image

from ingest.run import ingest_folder
from rag.cli import main
from tests.support.helpers import CHINESE, ENGLISH, dead_url, free_port, make_settings, write
from tests.support.servers import wait_http

PNG = b"\x89PNG\r\n\x1a\n"
ROWS = [
    {"id": "pumps", "question": "When are the pumps inspected?", "reference_answer": "Every Tuesday.",
     "reference_sources": [{"source": "cooling.md"}]},
    {"id": "backup", "question": "备份文件保存多久？", "reference_answer": "备份文件保存三十天。",
     "reference_sources": [{"source": "backup.txt"}]},
    {"id": "elsewhere", "question": "Where are the spare parts kept?",
     "reference_sources": [{"source": "inventory.md"}]},  # not indexed: a sure retrieval miss
]


@pytest.fixture
def workdir(tmp_path: Path, fast_engine: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An indexed tree and a dataset; the working directory, so no stray .env is read."""
    write(tmp_path / "docs" / "cooling.md", "# Cooling\n\n" + ENGLISH * 2)
    write(tmp_path / "docs" / "backup.txt", CHINESE)
    ingest_folder(tmp_path / "docs", make_settings(tmp_path, fast_engine))
    write(tmp_path / "qa.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ROWS))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def eval_env(url: str, **overrides: str) -> dict[str, str]:
    # An absolute path: Chroma caches its clients by path within a process.
    return {"OLLAMA_HOST": url, "RAG_STORAGE_DIR": str(Path.cwd() / "storage"), "RAG_MIN_SCORE": "0",
            "RAG_REQUEST_TIMEOUT": "60", **overrides}


def rag_eval(url: str, *args: str, **env: str) -> Result:
    return CliRunner().invoke(main, ["eval", *args], env=eval_env(url, **env), catch_exceptions=False)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_run_writes_every_report_file_and_the_charts_open(workdir, fast_engine):
    result = rag_eval(fast_engine, "run", "qa.jsonl", "--out", "out")
    assert result.exit_code == 0, result.output
    assert "faithfulness" in result.output
    assert "hit@5" in result.output
    out = workdir / "out"
    for chart in ("scores.png", "faithfulness_by_hit.png", "latency.png"):
        assert (out / chart).read_bytes().startswith(PNG)
        assert image.imread(out / chart).shape[0] > 100
        assert f"]({chart})" in (out / "report.md").read_text(encoding="utf-8")
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["rows"] == 3
    assert summary["counts"] == {"scored": 3, "judge_failed": 0, "abstained": 0, "answer_failed": 0}
    assert summary["metrics"]["hit@5"] == {"mean": pytest.approx(2 / 3, abs=1e-4), "ci95": [0.0, 1.0], "n": 3}
    assert summary["metrics"]["token_f1"]["n"] == 2  # only rows with a reference answer
    assert summary["judge"]["model"] == "smollm2:135m"
    assert len(summary["judge"]["prompts_sha256"]) == 64
    assert set(summary["latency_ms"]) == {"retrieve", "generate", "answer", "judge", "total"}
    rows = read_jsonl(out / "results.jsonl")
    assert [r["id"] for r in rows] == ["pumps", "backup", "elsewhere"]
    assert rows[0]["statements"]
    assert rows[0]["judge"]["raw"]
    assert rows[2]["retrieval"] == {"rank": None, "hit@1": 0.0, "hit@3": 0.0, "hit@5": 0.0, "mrr": 0.0}


def test_fail_under_exits_1_naming_each_missed_threshold(workdir, fast_engine):
    result = rag_eval(fast_engine, "run", "qa.jsonl", "--out", "out", "--fail-under", "faithfulness=0.5,hit@1=0.9")
    assert result.exit_code == 1
    assert "hit@1 0.667 < 0.9" in result.output
    assert "faithfulness" not in result.output.split("fail-under:")[1]
    assert (workdir / "out" / "report.md").exists()  # the report is written before the verdict


def test_malformed_fail_under_and_dataset_are_usage_errors(workdir, fast_engine):
    bad_spec = rag_eval(fast_engine, "run", "qa.jsonl", "--fail-under", "faithfulness>0.8")
    assert bad_spec.exit_code == 2
    assert "--fail-under" in bad_spec.output
    write(workdir / "bad.jsonl", '{"question": "fine"}\n{"question": ""}\n')
    bad_rows = rag_eval(fast_engine, "run", "bad.jsonl")
    assert bad_rows.exit_code == 2
    assert "bad.jsonl:2: question" in bad_rows.output


def test_a_question_with_nothing_relevant_is_an_abstention_not_a_score(workdir, fast_engine):
    write(workdir / "off.jsonl", json.dumps({"question": "zzz qqq xxyyzz?"}) + "\n")
    result = rag_eval(fast_engine, "run", "off.jsonl", "--out", "out", RAG_MIN_SCORE="0.99")
    assert result.exit_code == 0, result.output
    summary = json.loads((workdir / "out" / "summary.json").read_text())
    assert summary["counts"] == {"scored": 0, "judge_failed": 0, "abstained": 1, "answer_failed": 0}
    assert summary["metrics"]["faithfulness"]["mean"] is None


def test_run_without_matplotlib_writes_the_report_without_charts_and_says_how_to_get_them(workdir, fast_engine):
    # matplotlib is the optional `eval` extra: a real `rag eval run` process in which it cannot be imported.
    no_matplotlib = "import sys; sys.modules['matplotlib'] = None; from rag.cli import main; main()"
    done = subprocess.run([sys.executable, "-c", no_matplotlib, "eval", "run", "qa.jsonl", "--out", "out"],
                          cwd=workdir, env={**os.environ, **eval_env(fast_engine)}, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    hint = "pip install -e '.[eval]'"
    assert (done.stdout + done.stderr).count(hint) == 1
    out = workdir / "out"
    assert not list(out.glob("*.png"))
    report = (out / "report.md").read_text(encoding="utf-8")
    assert hint in report
    assert "](" not in report.split("## Charts")[1].split("##")[0]  # no image links to missing files
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["counts"]["scored"] == 3  # everything else is there


@pytest.fixture
def served(workdir: Path, fast_engine: str) -> Iterator[str]:
    port = free_port()
    env = {**os.environ, "OLLAMA_HOST": fast_engine, "RAG_STORAGE_DIR": str(workdir / "storage")}
    server = subprocess.Popen([sys.executable, "-m", "rag", "serve", "--port", str(port)], env=env, cwd=workdir,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{base}/health", server, "rag serve")
        yield base
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_run_against_a_running_server_over_http(workdir, fast_engine, served):
    result = rag_eval(fast_engine, "run", "qa.jsonl", "--url", served, "--out", "out", "--mode", "vector")
    assert result.exit_code == 0, result.output
    summary = json.loads((workdir / "out" / "summary.json").read_text())
    assert summary["answers_from"] == served
    assert summary["retrieval_modes"] == {"vector": 3}
    assert summary["counts"]["scored"] == 3
    assert summary["metrics"]["hit@5"]["mean"] == pytest.approx(2 / 3, abs=1e-4)


def test_a_refused_question_is_recorded_and_the_run_goes_on(workdir, fast_engine, served):
    rows = [{"id": "huge", "question": "why " * 1100}, ROWS[0]]  # 4,400 characters: /ask refuses it with 422
    write(workdir / "mixed.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    result = rag_eval(fast_engine, "run", "mixed.jsonl", "--url", served, "--out", "out")
    assert result.exit_code == 0, result.output
    assert "not answered: row huge: rag serve answered 422: question:" in result.output
    summary = json.loads((workdir / "out" / "summary.json").read_text())
    assert summary["counts"] == {"scored": 1, "judge_failed": 0, "abstained": 0, "answer_failed": 1}
    assert summary["metrics"]["hit@5"]["n"] == 1  # the refused row is in no mean
    huge = read_jsonl(workdir / "out" / "results.jsonl")[0]
    assert (huge["status"], huge["answer"]) == ("answer_failed", None)
    assert "| huge | answer_failed |" in (workdir / "out" / "report.md").read_text(encoding="utf-8")


def test_rag_serve_down_stops_the_run_with_exit_2(workdir, fast_engine):
    result = rag_eval(fast_engine, "run", "qa.jsonl", "--url", dead_url(), "--out", "out")
    assert result.exit_code == 2
    assert "cannot reach rag serve" in result.output
    assert "Traceback" not in result.output


def test_generate_drafts_rows_labelled_with_their_chunk_source(workdir, fast_engine):
    first = rag_eval(fast_engine, "generate", "--out", "a.jsonl", "--n", "3", "--seed", "1")
    assert first.exit_code == 0, first.output
    assert rag_eval(fast_engine, "generate", "--out", "b.jsonl", "--n", "3", "--seed", "1").exit_code == 0
    rows = read_jsonl(workdir / "a.jsonl")
    assert (workdir / "a.jsonl").read_text() == (workdir / "b.jsonl").read_text()  # same seed, same draft
    assert 1 <= len(rows) <= 3
    for row in rows:
        assert row["question"]
        assert row["reference_sources"][0]["source"] in {"cooling.md", "backup.txt"}
    drafted = workdir / "a.jsonl"
    assert rag_eval(fast_engine, "run", str(drafted), "--out", "drafted").exit_code == 0  # a draft is a dataset


def test_validate_reports_auroc_failures_spread_and_the_baseline(workdir, fast_engine):
    cases = [
        {"id": "c1", "lang": "en", "question": "When?", "context": "The snapshot runs at 02:30.",
         "answer": "It runs at 02:30.", "label": "supported", "kind": "supported"},
        {"id": "c2", "lang": "en", "question": "When?", "context": "The snapshot runs at 02:30.",
         "answer": "It runs at 04:00 on Sundays.", "label": "unsupported", "kind": "changed_number"},
    ]
    write(workdir / "cases.jsonl", "".join(json.dumps(c) + "\n" for c in cases))
    result = rag_eval(fast_engine, "validate", "cases.jsonl", "--runs", "2", "--out", "val")
    assert result.exit_code == 0, result.output
    summary = json.loads((workdir / "val" / "summary.json").read_text())
    assert summary["seeds"] == [42, 43]
    assert summary["judge"]["auroc"]["runs"] == [0.5, 0.5]  # the stand-in says "yes" to everything
    assert summary["judge"]["failure_rate"]["mean"] == 0.0
    assert summary["judge"]["identical_runs"] is True
    assert summary["baseline"]["auroc"] == 1.0  # 02:30 overlaps the context, 04:00 on Sundays does not
    assert len(read_jsonl(workdir / "val" / "results.jsonl")) == 4
    assert (workdir / "val" / "scores_by_label.png").read_bytes().startswith(PNG)
