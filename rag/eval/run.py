"""Evaluation runs: a QA dataset through the /ask pipeline, judged and scored, summarised, checked."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

from rag.answer.askers import Ask
from rag.answer.pipeline import is_abstention
from rag.config import Settings
from rag.errors import BadRequest, OllamaError
from rag.eval import metrics
from rag.eval.dataset import QARow
from rag.eval.judge import JUDGE_NUM_PREDICT, Judge, prompts_sha256

log = logging.getLogger(__name__)

Progress = Callable[[str, int], Callable[[int], None]]  # (description, total) -> advance(n)

# Errors that concern one question (too long, a model error on that request): the row is recorded as
# answer_failed and the run goes on. Anything else (Ollama or the store unreachable, a missing model) stops it.
ROW_ERRORS = (BadRequest, OllamaError)
STATUSES = ("scored", "judge_failed", "abstained", "answer_failed")
METRICS = ("faithfulness", "support", "hit@1", "hit@3", "hit@5", "mrr", "token_f1", "exact_match")
STAGES = ("retrieve", "generate", "answer", "judge", "total")


def no_progress(description: str, total: int) -> Callable[[int], None]:
    """A Progress that shows nothing (library use and tests)."""
    return lambda n: None


# -- one row: answer, retrieval and correctness, then the judge -------------------------------------


def answer_row(index: int, row: QARow, ask: Ask) -> dict[str, Any]:
    refs = [r.model_dump(exclude_none=True) for r in row.reference_sources]
    asked = {"id": row.id if row.id is not None else index + 1, "question": row.question,
             "reference_answer": row.reference_answer, "reference_sources": refs}
    try:
        got = ask(row.question)
    except ROW_ERRORS as exc:
        log.warning("row %s: no answer: %s", asked["id"], exc.message)
        return {
            **asked, "status": "answer_failed", "error": exc.message, "answer": None, "abstained": False,
            "sources": [], "retrieval": None, "correctness": None, "faithfulness": None, "support": None,
            "statements": [],
            "judge": None, "timings_ms": {},
        }
    sources = [{k: s.get(k) for k in ("n", "source", "page", "chunk_id", "score", "text")} for s in got["sources"]]
    timings = got.get("timings_ms", {})
    rank = metrics.first_hit(sources, refs) if refs else None
    answer = got["answer"]
    return {
        **asked,
        "answer": answer,
        "model": got.get("model"),
        "mode": got.get("mode"),
        "abstained": bool(got.get("abstained")) or is_abstention(answer),
        "sources": sources,
        "retrieval": {"rank": rank, **metrics.retrieval_scores(rank)} if refs else None,
        "correctness": _correctness(answer, row.reference_answer),
        # The support check's verdict, from /ask: the share of the answer's sentences a source supports.
        "support": _support(got.get("claims")),
        "timings_ms": {"retrieve": timings.get("retrieve"), "generate": timings.get("generate"),
                       "answer": timings.get("total")},
    }


def _support(claims: list[dict[str, Any]] | None) -> float | None:
    if not claims:
        return None
    return round(sum(bool(c.get("supported")) for c in claims) / len(claims), 4)


def _correctness(answer: str, reference: str | None) -> dict[str, float] | None:
    if reference is None:
        return None
    return {"token_f1": round(metrics.token_f1(answer, reference), 4),
            "exact_match": metrics.exact_match(answer, reference)}


def judge_row(record: dict[str, Any], judge: Judge) -> None:
    """Faithfulness of one answered row; an abstention is flagged, not scored."""
    timings = record["timings_ms"]
    if record.get("status") == "answer_failed":
        return
    if record["abstained"]:
        record.update(status="abstained", faithfulness=None, statements=[], judge=None)
        timings["total"] = timings["answer"]
        return
    got = judge.faithfulness(record["question"], record["answer"], [s["text"] for s in record["sources"]])
    record.update(
        status="judge_failed" if got.score is None else "scored",
        faithfulness=None if got.score is None else round(got.score, 4),
        statements=[asdict(v) for v in got.verdicts],
        judge={"model": judge.model, "raw": got.raw, "error": got.error},
    )
    timings["judge"] = round(got.seconds * 1000, 1)
    timings["total"] = round((timings["answer"] or 0.0) + timings["judge"], 1)


def run_dataset(rows: Sequence[QARow], ask: Ask, judge: Judge, progress: Progress = no_progress
                ) -> list[dict[str, Any]]:
    """Answer every row first, then judge them all: with a separate judge model on one Ollama, this
    loads each model once instead of swapping them for every row."""
    log.info("answering %s questions", len(rows))
    records, advance = [], progress("answer", len(rows))
    for i, row in enumerate(rows):
        records.append(answer_row(i, row, ask))
        advance(1)
    log.info("judging %s answers with %s", len(records), judge.model)
    advance = progress("judge", len(records))
    for i, record in enumerate(records):
        judge_row(record, judge)
        log.debug("judged %s/%s: %s", i + 1, len(records), record["status"])
        advance(1)
    return records


# -- the summary ------------------------------------------------------------------------------------


def metric_values(records: Sequence[dict[str, Any]]) -> dict[str, list[float]]:
    """Per metric, the values of the rows it applies to (judge failures and abstentions never count)."""
    values: dict[str, list[float]] = {m: [] for m in METRICS}
    for r in records:
        if r["status"] == "scored":
            values["faithfulness"].append(r["faithfulness"])
        if r["status"] in ("scored", "judge_failed") and r.get("support") is not None:
            values["support"].append(r["support"])
        for part in (r["retrieval"] or {}, r["correctness"] or {}):
            for name, value in part.items():
                if name in values:
                    values[name].append(value)
    return values


def summarize(records: Sequence[dict[str, Any]], meta: dict[str, Any]) -> dict[str, Any]:
    counts = {s: sum(r["status"] == s for r in records) for s in STATUSES}
    judged = counts["scored"] + counts["judge_failed"]
    latency = {
        stage: metrics.percentiles([r["timings_ms"][stage] for r in records
                                    if r["timings_ms"].get(stage) is not None])
        for stage in STAGES
    }
    return {
        **meta,
        "rows": len(records),
        "counts": counts,
        "retrieval_modes": dict(Counter(str(r.get("mode")) for r in records)),  # as /ask reported them
        "judge_failure_rate": round(counts["judge_failed"] / judged, 4) if judged else None,
        "abstention_rate": round(counts["abstained"] / len(records), 4) if records else None,
        "answer_errors": [{"id": r["id"], "error": r["error"]} for r in records if r["status"] == "answer_failed"],
        "metrics": {name: metrics.mean_with_ci(v) for name, v in metric_values(records).items()},
        "latency_ms": latency,
        "bootstrap": {"resamples": metrics.BOOTSTRAP_RESAMPLES, "seed": metrics.BOOTSTRAP_SEED, "level": 0.95},
    }


def run_meta(settings: Settings, judge: Judge, top_k: int, mode: str | None, url: str | None) -> dict[str, Any]:
    """What a reader needs to reproduce a run: models, prompts, options, where answers came from."""
    return {
        "answers_from": url or "in-process pipeline",
        "judge": judge_meta(settings, judge),
        # With --url the server answers with its own settings; these are the evaluating process's.
        "settings_of": f"this process, not the server at {url}" if url else "this process",
        "settings": {
            "chat_model": settings.chat_model, "embed_model": settings.embed_model, "top_k": top_k,
            "retrieval_mode": mode or settings.retrieval_mode, "fusion": settings.fusion,
            "min_score": settings.min_score, "num_ctx": settings.num_ctx, "temperature": settings.temperature,
            "seed": settings.seed, "num_predict": settings.num_predict, "chunk_size": settings.chunk_size,
            "chunk_overlap": settings.chunk_overlap, "collection": settings.collection,
            "ollama_url": settings.ollama_url,
        },
    }


def judge_meta(settings: Settings, judge: Judge) -> dict[str, Any]:
    return {
        "model": judge.model, "prompts_sha256": prompts_sha256(), "temperature": 0.0,
        "seed": judge.chat.options["seed"], "num_ctx": settings.num_ctx, "num_predict": JUDGE_NUM_PREDICT,
        "statements": "sentences split by rule (.!? and 。！？), then decomposed by the judge",
    }


# -- thresholds -------------------------------------------------------------------------------------


def parse_thresholds(spec: str) -> dict[str, float]:
    """'faithfulness=0.8,hit@5=0.9' -> {name: minimum}; ValueError says what is wrong."""
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep or name not in METRICS:
            raise ValueError(f"'{part}': expected METRIC=VALUE with METRIC one of {', '.join(METRICS)}")
        try:
            out[name] = float(value)
        except ValueError:
            raise ValueError(f"'{part}': '{value.strip()}' is not a number") from None
        if not 0.0 <= out[name] <= 1.0:
            raise ValueError(f"'{part}': the value must be between 0 and 1")
    if not out:
        raise ValueError("no thresholds given; e.g. faithfulness=0.8,hit@5=0.9")
    return out


def missed_thresholds(summary: dict[str, Any], thresholds: dict[str, float]) -> list[str]:
    missed = []
    for name, minimum in thresholds.items():
        mean = summary["metrics"][name]["mean"]
        if mean is None:
            missed.append(f"{name}: no rows were scored (minimum {minimum:g})")
        elif mean < minimum:
            missed.append(f"{name} {mean:.3f} < {minimum:g}")
    return missed
