"""`rag eval`: score a QA dataset end to end (run), draft one from the index (generate), check the judge (validate)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from rag.answer.models import MODE_HELP, MODES
from rag.config import Settings
from rag.console import fail, pass_settings, progress_bar
from rag.errors import RagError

EXIT_THRESHOLD_MISSED = 1
DEFAULT_CASES = Path("data/eval/faithfulness.jsonl")


def _progress(unit: str) -> Callable[[str, int], Callable[[int], None]]:
    """A progress bar per stage (answer, judge; run 1/3 ...), as `rag ingest` shows one."""
    return lambda description, total: progress_bar(description, total, unit, leave=False)


def _stamp() -> str:
    return datetime.now().strftime("%Y%m%d-%H%M%S")


def _timer() -> Callable[[], dict[str, Any]]:
    """Started now; calling what it returns gives a report's started_at and seconds."""
    started, clock = datetime.now().isoformat(timespec="seconds"), time.perf_counter()
    return lambda: {"started_at": started, "seconds": round(time.perf_counter() - clock, 1)}


def _show(table: str, out: Path) -> None:
    """The console table, the one line about missing charts when matplotlib is absent, where the report is."""
    from rag.eval.report import NO_CHARTS, can_draw

    click.echo(table)
    if not can_draw():
        click.echo(NO_CHARTS, err=True)
    click.echo(f"\nreport: {out / 'report.md'}")


def _thresholds(ctx: click.Context, param: click.Parameter, value: str | None) -> dict[str, float] | None:
    from rag.eval.run import parse_thresholds

    if value is None:
        return None
    try:
        return parse_thresholds(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.group()
def eval_group() -> None:
    """Evaluate answers (faithfulness, retrieval, correctness) and the judge itself, offline."""


@eval_group.command("run")
@click.argument("dataset", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--url", default=None, help="Ask a running `rag serve` (e.g. http://127.0.0.1:8080) over HTTP.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Output folder (default eval-runs/<timestamp>/).")
@click.option("--top-k", type=click.IntRange(1, 50), default=5, show_default=True,
              help="Chunks retrieved per question; 5 so that hit@5 is measured.")
@click.option("--mode", type=click.Choice(MODES), default=None, help=MODE_HELP)
@click.option("--judge-model", default=None, help="Ollama model that judges faithfulness (default RAG_CHAT_MODEL).")
@click.option("--fail-under", callback=_thresholds, default=None, metavar="METRIC=MIN,...",
              help="Exit 1 when a mean falls below its minimum, e.g. faithfulness=0.8,hit@5=0.9.")
@pass_settings
def run_command(settings: Settings, dataset: Path, url: str | None, out: Path | None, top_k: int, mode: str | None,
                judge_model: str | None, fail_under: dict[str, float] | None) -> None:
    """Answer every question of DATASET (JSON Lines) as /ask does, judge and score it, and write a report."""
    from rag.answer.askers import client_key, http_asker, local_asker
    from rag.eval.dataset import QARow, load_jsonl
    from rag.eval.judge import Judge
    from rag.eval.report import run_table, write_run_report
    from rag.eval.run import run_dataset, run_meta, summarize

    out = out or Path("eval-runs") / _stamp()
    timing = _timer()
    try:
        rows = load_jsonl(dataset, QARow)
        judge = Judge(settings, judge_model)
        with (http_asker(url, top_k, mode, settings.request_timeout, client_key(settings)) if url
              else local_asker(settings, top_k, mode, "rag eval")) as ask:
            records = run_dataset(rows, ask, judge, _progress("row"))
    except RagError as exc:
        fail(exc.message)
    summary = summarize(records, {"dataset": str(dataset), **timing(),
                                  **run_meta(settings, judge, top_k, mode, url)})
    write_run_report(out, records, summary)
    _show(run_table(summary), out)
    _check(summary, fail_under)


def _check(summary: dict[str, Any], thresholds: dict[str, float] | None) -> None:
    from rag.eval.run import missed_thresholds

    missed = missed_thresholds(summary, thresholds or {})
    if missed:
        click.echo("fail-under: " + "; ".join(missed), err=True)
        sys.exit(EXIT_THRESHOLD_MISSED)


@eval_group.command("generate")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Dataset to write.")
@click.option("--n", "count", type=click.IntRange(1, 1000), default=20, show_default=True, help="Rows to draft.")
@click.option("--seed", type=int, default=0, show_default=True, help="Which chunks are sampled.")
@click.option("--model", default=None, help="Ollama model that writes the questions (default RAG_CHAT_MODEL).")
@pass_settings
def generate_command(settings: Settings, out: Path, count: int, seed: int, model: str | None) -> None:
    """Draft a dataset: one question per sampled chunk, labelled with that chunk's source. Review it."""
    from rag.eval.dataset import draft_dataset

    try:
        rows = draft_dataset(settings, count, seed, model)
    except RagError as exc:
        fail(exc.message)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    click.echo(f"wrote {len(rows)} rows to {out} ({count - len(rows)} chunks gave no usable question); "
               "read them before trusting them")


@eval_group.command("validate")
@click.argument("cases", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=DEFAULT_CASES)
@click.option("--runs", type=click.IntRange(1, 20), default=3, show_default=True,
              help="Repeated runs, seeds RAG_SEED, RAG_SEED+1, ...")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Output folder (default eval-runs/validate-<timestamp>/).")
@click.option("--judge-model", default=None, help="Ollama model that judges (default RAG_CHAT_MODEL).")
@click.option("--threshold", type=click.FloatRange(0, 1), default=1.0, show_default=True,
              help="Score at or above which an answer counts as supported (1.0: every statement supported).")
@pass_settings
def validate_command(settings: Settings, cases: Path, runs: int, out: Path | None, judge_model: str | None,
                     threshold: float) -> None:
    """Score the labelled CASES with the judge: AUROC, balanced accuracy, failures, spread, and a baseline."""
    from rag.eval.dataset import load_jsonl
    from rag.eval.judge import Judge
    from rag.eval.judge_check import FaithfulnessCase, validate_judge, validation_summary
    from rag.eval.report import validation_table, write_validation_report
    from rag.eval.run import judge_meta

    out = out or Path("eval-runs") / f"validate-{_stamp()}"
    seeds = [settings.seed + i for i in range(runs)]
    timing = _timer()
    try:
        labelled = load_jsonl(cases, FaithfulnessCase)
        records = validate_judge(labelled, lambda seed: Judge(settings, judge_model, seed), seeds, _progress("case"))
    except RagError as exc:
        fail(exc.message)
    judge = Judge(settings, judge_model)
    meta = {"dataset": str(cases), "judge_model": judge.model, "judge_meta": judge_meta(settings, judge),
            **timing()}
    summary = validation_summary(records, threshold, meta)
    write_validation_report(out, records, summary)
    _show(validation_table(summary), out)
