"""Checking the judge: labelled cases judged over repeated runs, AUROC and balanced accuracy, a baseline."""

from __future__ import annotations

import logging
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from rag.answer.support import SUPPORTED, SupportChecker, support_score
from rag.eval import metrics
from rag.eval.judge import Judge
from rag.eval.run import Progress, no_progress

log = logging.getLogger(__name__)

Records = Sequence[dict[str, Any]]
BASELINE = "word overlap: share of answer tokens (characters for Chinese) found in the context"
SUPPORT = "support check: the least supported sentence's score (rag/answer/support.py), deterministic"


class FaithfulnessCase(BaseModel):
    """A labelled case of data/eval/faithfulness.jsonl."""

    model_config = ConfigDict(extra="allow")
    id: str
    lang: str = "en"
    question: str
    context: str = Field(min_length=1)
    answer: str = Field(min_length=1)
    label: Literal["supported", "unsupported"]
    kind: str = ""


def validate_judge(
    cases: Sequence[FaithfulnessCase], make_judge: Callable[[int], Judge], seeds: Sequence[int],
    progress: Progress = no_progress,
) -> list[dict[str, Any]]:
    """Judge every case once per seed; one record per (run, case), with the baseline's score beside it."""
    records = []
    checker = SupportChecker()
    for run, seed in enumerate(seeds, start=1):
        judge = make_judge(seed)
        log.info("run %s of %s: judging %s cases with %s, seed %s", run, len(seeds), len(cases), judge.model, seed)
        advance = progress(f"run {run}/{len(seeds)}", len(cases))
        for case in cases:
            got = judge.faithfulness(case.question, case.answer, [case.context])
            records.append({
                "run": run, "seed": seed, "id": case.id, "lang": case.lang, "kind": case.kind,
                "label": case.label, "score": got.score, "baseline": metrics.word_overlap(case.answer, case.context),
                "support": round(support_score(checker, case.answer, case.context), 4),
                "statements": [asdict(v) for v in got.verdicts], "raw": got.raw, "error": got.error,
                "seconds": round(got.seconds, 2),
            })
            advance(1)
    return records


def separation(records: Records, key: str, threshold: float) -> dict[str, Any]:
    """AUROC and balanced accuracy of records[key] against the labels; unscored records are left out."""
    got = [r for r in records if r[key] is not None]
    scores, positive = [r[key] for r in got], [r["label"] == "supported" for r in got]
    return {"auroc": metrics.auroc(scores, positive),
            "balanced_accuracy": metrics.balanced_accuracy(scores, positive, threshold), "n": len(got)}


def _auroc_by_lang(records: Records, key: str) -> dict[str, float | None]:
    langs = sorted({r["lang"] for r in records})
    return {lang: separation([r for r in records if r["lang"] == lang], key, 1.0)["auroc"] for lang in langs}


def _mean_by_kind(records: Records, key: str) -> dict[str, float | None]:
    groups: dict[str, list[float]] = {}
    for r in records:
        groups.setdefault(r["kind"], [])
        if r[key] is not None:
            groups[r["kind"]].append(r[key])
    return {kind: round(statistics.fmean(v), 4) if v else None for kind, v in sorted(groups.items())}


def judge_figures(per_run: Sequence[Records], threshold: float) -> dict[str, Any]:
    """Each figure over the runs (mean, min, max, stdev); identical_runs when every run scored alike."""
    judged = [separation(rs, "score", threshold) for rs in per_run]
    by_lang = [_auroc_by_lang(rs, "score") for rs in per_run]
    return {
        "auroc": metrics.spread([j["auroc"] for j in judged]),
        "balanced_accuracy": metrics.spread([j["balanced_accuracy"] for j in judged]),
        "failure_rate": metrics.spread([sum(r["score"] is None for r in rs) / len(rs) for rs in per_run]),
        "identical_runs": len({tuple(r["score"] for r in rs) for rs in per_run}) == 1,
        "mean_score_by_kind": _mean_by_kind([r for rs in per_run for r in rs], "score"),
        "auroc_by_lang": {lang: metrics.spread([b[lang] for b in by_lang])["mean"] for lang in by_lang[0]},
    }


def baseline_figures(records: Records, threshold: float) -> dict[str, Any]:
    return {"name": BASELINE, **separation(records, "baseline", threshold),
            "mean_score_by_kind": _mean_by_kind(records, "baseline"),
            "auroc_by_lang": _auroc_by_lang(records, "baseline")}


def support_figures(records: Records) -> dict[str, Any]:
    """The support check beside the judge: the same cases, deterministic, so one run says it all."""
    return {"name": SUPPORT, "threshold": SUPPORTED, **separation(records, "support", SUPPORTED),
            "mean_score_by_kind": _mean_by_kind(records, "support"),
            "auroc_by_lang": _auroc_by_lang(records, "support")}


def validation_summary(records: Records, threshold: float, meta: dict[str, Any]) -> dict[str, Any]:
    per_run = [[r for r in records if r["run"] == run] for run in sorted({r["run"] for r in records})]
    return {
        **meta, "cases": len(per_run[0]), "runs": len(per_run), "seeds": [rs[0]["seed"] for rs in per_run],
        "threshold": threshold, "judge": judge_figures(per_run, threshold),
        "baseline": baseline_figures(per_run[0], threshold),
        "support": support_figures(per_run[0]),
    }
