"""`rag eval` on the real bundled models (smollm2:135m answers and judges, all-minilm retrieves)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from ingest.run import ingest_folder
from rag.cli import main
from rag.eval.judge import Judge, answer_sentences
from rag.eval.metrics import token_f1
from tests.support.helpers import make_settings, write

pytestmark = pytest.mark.slow

HANDBOOK = (
    "# Incident checklist\n\nIncident tickets use the prefix INC-RAG. Open a ticket and note the time the problem "
    "started and who reported it.\n\n# Backups\n\nThe nightly snapshot of storage/ runs at 02:30. Test a restore "
    "at least once per quarter on a spare machine.\n"
)
FAQ = "问：storage/ 目录可以放在网络共享盘上吗？\n答：不可以，storage/ 目录必须放在本地磁盘上。\n"
ROWS = [
    {"id": "prefix", "question": "What prefix do incident tickets use?",
     "reference_answer": "Incident tickets use the prefix INC-RAG.", "reference_sources": [{"source": "handbook.md"}]},
    {"id": "off-topic", "question": "Who won the football world cup in 1998?",
     "reference_answer": "The documents do not cover this."},
]


def test_real_judge_gives_a_usable_and_repeatable_judgement(tmp_path, real_engine):
    judge = Judge(make_settings(tmp_path, real_engine))
    answer = "Incident tickets use the prefix INC-RAG [1]. Open a ticket and note when the problem started."
    first = judge.faithfulness("What do I do first in an incident?", answer, [HANDBOOK])
    again = judge.faithfulness("What do I do first in an incident?", answer, [HANDBOOK])
    assert first.error is None, first.raw
    assert {v.sentence for v in first.verdicts} == {1, 2}  # both sentences became statements
    assert first.score == sum(v.supported for v in first.verdicts) / len(first.verdicts)
    assert (again.raw, again.score) == (first.raw, first.score)  # temperature 0 and a fixed seed


def test_eval_run_end_to_end_on_the_bundled_models(tmp_path: Path, real_engine, monkeypatch):
    write(tmp_path / "docs" / "handbook.md", HANDBOOK)
    write(tmp_path / "docs" / "faq.txt", FAQ)
    ingest_folder(tmp_path / "docs", make_settings(tmp_path, real_engine))
    write(tmp_path / "qa.jsonl", "".join(json.dumps(r) + "\n" for r in ROWS))
    monkeypatch.chdir(tmp_path)
    env = {"OLLAMA_HOST": real_engine, "RAG_STORAGE_DIR": str(tmp_path / "storage"), "RAG_MIN_SCORE": "0.2",
           "RAG_NUM_PREDICT": "64"}  # a short answer keeps the test quick on two cores
    result = CliRunner().invoke(main, ["eval", "run", "qa.jsonl", "--out", "out"], env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    rows = {r["id"]: r for r in map(json.loads, (tmp_path / "out" / "results.jsonl").read_text().splitlines())}
    prefix, off_topic = rows["prefix"], rows["off-topic"]
    # Checked by hand: only the handbook says INC-RAG, and its chunk is the first of the sources.
    assert prefix["retrieval"] == {"rank": 1, "hit@1": 1.0, "hit@3": 1.0, "hit@5": 1.0, "mrr": 1.0}
    assert prefix["sources"][0]["source"] == "handbook.md"
    assert prefix["status"] == "scored"
    # Every sentence of the answer became at least one statement, and the score is the share the judge upheld.
    assert {s["sentence"] for s in prefix["statements"]} == set(range(1, len(answer_sentences(prefix["answer"])) + 1))
    verdicts = [s["supported"] for s in prefix["statements"]]
    assert prefix["faithfulness"] == round(sum(verdicts) / len(verdicts), 4)
    assert len(prefix["judge"]["raw"]) >= 2  # statements, then verdicts (plus any repair)
    assert prefix["correctness"]["token_f1"] == round(token_f1(prefix["answer"], ROWS[0]["reference_answer"]), 4)
    assert off_topic["status"] == "abstained"  # nothing scores above RAG_MIN_SCORE: declined, not judged
    assert off_topic["correctness"] == {"token_f1": 1.0, "exact_match": 1.0}
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["counts"] == {"scored": 1, "judge_failed": 0, "abstained": 1, "answer_failed": 0}
    assert summary["metrics"]["hit@1"]["mean"] == 1.0
