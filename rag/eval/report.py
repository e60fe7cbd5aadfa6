"""Evaluation reports: the console tables, results.jsonl, summary.json, report.md and its PNG charts.

The charts need matplotlib, the optional `eval` extra; without it a report is complete but for them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from rag.eval.run import METRICS, STAGES

FIGURE_DPI = 110
NO_CHARTS = "charts skipped: matplotlib is not installed; pip install -e '.[eval]' adds them"

Chart = Callable[[Path], None]  # draws one PNG at the path given


def can_draw() -> bool:
    """Whether matplotlib imports; asked when a report is written, never at import time."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def write_jsonl(path: Path, records: Sequence[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8") as out:
        for record in records:
            out.write(json.dumps(record, ensure_ascii=False) + "\n")


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def _num(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _ci(m: dict[str, Any]) -> str:
    return "-" if m["ci95"] is None else f"[{m['ci95'][0]:.3f}, {m['ci95'][1]:.3f}]"


# -- text -------------------------------------------------------------------------------------------


def run_table(summary: dict[str, Any]) -> str:
    lines = [f"{'metric':<14}{'mean':>8}  {'95% CI':<18}{'n':>4}"]
    for name in METRICS:
        m = summary["metrics"][name]
        lines.append(f"{name:<14}{_num(m['mean']):>8}  {_ci(m):<18}{m['n']:>4}")
    c = summary["counts"]
    lines.append(f"\nrows {summary['rows']}: {c['scored']} scored, {c['judge_failed']} judge failed, "
                 f"{c['abstained']} abstained, {c['answer_failed']} not answered (judge {summary['judge']['model']})")
    lines += [f"  not answered: row {e['id']}: {e['error']}" for e in summary["answer_errors"]]
    lines.append(f"\n{'latency ms':<14}{'p50':>10}{'p95':>10}{'n':>6}")
    for stage in STAGES:
        p = summary["latency_ms"][stage]
        lines.append(f"{stage:<14}{_num(p['p50'], 1):>10}{_num(p['p95'], 1):>10}{p['n']:>6}")
    return "\n".join(lines)


def validation_table(summary: dict[str, Any]) -> str:
    j, b, s = summary["judge"], summary["baseline"], summary["support"]
    spread = "mean (min-max, stdev over runs)"
    lines = [f"{'':<20}{'judge ' + summary['judge_model']:<40}{'support check':<16}{'word-overlap baseline':<22}",
             f"{'':<20}{spread:<40}"]
    for name in ("auroc", "balanced_accuracy"):
        lines.append(f"{name:<20}{_spread(j[name]):<40}{_num(s[name]):<16}{_num(b[name]):<22}")
    lines.append(f"{'failure_rate':<20}{_spread(j['failure_rate']):<40}{'0.000':<16}{'0.000':<22}")
    lines.append(f"\n{summary['cases']} cases x {summary['runs']} runs (seeds {summary['seeds']}); "
                 f"supported when score >= {summary['threshold']:g}; identical runs: {j['identical_runs']}")
    return "\n".join(lines)


def _spread(s: dict[str, Any]) -> str:
    if s["mean"] is None:
        return "-"
    return f"{s['mean']:.3f} ({s['min']:.3f}-{s['max']:.3f}, sd {s['stdev']:.3f})"


def _cell(text: Any, width: int = 80) -> str:
    flat = " ".join(str(text).split()).replace("|", "\\|")
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def run_markdown(summary: dict[str, Any], records: Sequence[dict[str, Any]], charts: Sequence[str]) -> str:
    c, judge = summary["counts"], summary["judge"]
    lines = [
        f"# Evaluation: {summary['dataset']}", "",
        f"- rows: {summary['rows']} ({c['scored']} scored, {c['judge_failed']} judge failed, "
        f"{c['abstained']} abstained, {c['answer_failed']} not answered); answers from: {summary['answers_from']}",
        f"- chat model `{summary['settings']['chat_model']}`, embeddings `{summary['settings']['embed_model']}`, "
        f"top_k {summary['settings']['top_k']}, retrieval modes used {summary['retrieval_modes']}",
        f"- judge `{judge['model']}` (temperature 0, seed {judge['seed']}, prompts sha256 "
        f"`{judge['prompts_sha256'][:12]}`); started {summary['started_at']}, {summary['seconds']:.0f} s", "",
        "## Scores", "", "| metric | mean | 95% CI | n |", "|---|---|---|---|",
    ]
    lines += [f"| {n} | {_num(m['mean'])} | {_ci(m)} | {m['n']} |" for n, m in summary["metrics"].items()]
    lines += ["", f"Judge failure rate: {_num(summary['judge_failure_rate'])}; abstention rate: "
              f"{_num(summary['abstention_rate'])}. Intervals: percentile bootstrap of the mean, "
              f"{summary['bootstrap']['resamples']} resamples, seed {summary['bootstrap']['seed']}.", "",
              "## Latency (ms per row)", "", "| stage | p50 | p95 | n |", "|---|---|---|---|"]
    lines += [f"| {s} | {_num(p['p50'], 1)} | {_num(p['p95'], 1)} | {p['n']} |"
              for s, p in summary["latency_ms"].items()]
    return "\n".join(lines + _charts(charts) + _rows_to_read(records) + DEFINITIONS)


def _charts(names: Sequence[str]) -> list[str]:
    shown = [f"![{name}]({name})\n" for name in names] or [f"{NO_CHARTS.capitalize()}.\n"]
    return ["", "## Charts", "", *shown]


def _rows_to_read(records: Sequence[dict[str, Any]]) -> list[str]:
    picked = [r for r in records if r["status"] in ("answer_failed", "judge_failed")]
    picked += sorted((r for r in records if r["status"] == "scored" and r["faithfulness"] < 1),
                     key=lambda r: r["faithfulness"])
    if not picked:
        return []
    lines = ["## Rows to read first (not answered, judge failures, then lowest faithfulness)", "",
             "| id | status | faithfulness | hit@5 | question | answer |", "|---|---|---|---|---|---|"]
    for r in picked[:10]:
        hit = _num(r["retrieval"]["hit@5"], 0) if r["retrieval"] else "-"
        lines.append(f"| {r['id']} | {r['status']} | {_num(r['faithfulness'], 2)} | {hit} | "
                     f"{_cell(r['question'], 60)} | {_cell(r['answer'] or r.get('error'))} |")
    return [*lines, ""]


DEFINITIONS = [
    "## How the numbers are made", "",
    "- **faithfulness** (as in RAGAS): the answer is split into sentences by rule (`.!?`, `。！？`), the judge "
    "rewrites each as standalone statements, then gives each statement a verdict against the retrieved "
    "chunks; score = supported / all statements. Abstentions are not scored; a judge reply that is still "
    "unusable after one repair attempt makes the row a judge failure, left out of the mean. A row whose "
    "question was refused or failed at Ollama is *not answered*: listed with its error, left out of every mean.",
    "- **hit@k / mrr**: whether a chunk from a reference source (same file path, and page when given) is among "
    "the first k retrieved; mrr = 1 / rank of the first such chunk (0 when none).",
    "- **token_f1 / exact_match**: against the reference answer after lowercasing and removing punctuation, "
    "English articles and spaces; Chinese is compared character by character.",
    "- **latency**: retrieve and generate as `/ask` reports them, answer = their total, judge = both judge "
    "calls, total = answer + judge.", "",
]


def validation_markdown(summary: dict[str, Any], charts: Sequence[str]) -> str:
    j, b, sup = summary["judge"], summary["baseline"], summary["support"]
    lines = [
        f"# Judge validation: {summary['dataset']}", "",
        f"- judge `{summary['judge_model']}`, temperature 0, seeds {summary['seeds']}, prompts sha256 "
        f"`{summary['judge_meta']['prompts_sha256'][:12]}`; {summary['cases']} labelled cases x "
        f"{summary['runs']} runs; {summary['seconds']:.0f} s",
        f"- an answer counts as supported when its score >= {summary['threshold']:g}; AUROC needs no threshold",
        f"- runs identical: {j['identical_runs']}",
        f"- support check: {sup['name']}; supported when >= {sup['threshold']:g}", "",
        "| | judge: mean | min | max | stdev | support check | word-overlap baseline |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in ("auroc", "balanced_accuracy", "failure_rate"):
        s = j[name]
        base = _num(b.get(name)) if name != "failure_rate" else "0.000"
        checked = _num(sup.get(name)) if name != "failure_rate" else "0.000"
        lines.append(f"| {name} | {_num(s['mean'])} | {_num(s['min'])} | {_num(s['max'])} | "
                     f"{_num(s['stdev'])} | {checked} | {base} |")
    lines += ["", "Mean score by kind of case (judge over all runs; support check; baseline):", "",
              "| kind | judge | support | baseline |", "|---|---|---|---|"]
    lines += [f"| {k} | {_num(v)} | {_num(sup['mean_score_by_kind'].get(k))} | "
              f"{_num(b['mean_score_by_kind'].get(k))} |" for k, v in j["mean_score_by_kind"].items()]
    lines += ["", "| language | judge AUROC (mean over runs) | support AUROC | baseline AUROC |",
              "|---|---|---|---|"]
    lines += [f"| {lang} | {_num(v)} | {_num(sup['auroc_by_lang'].get(lang))} | "
              f"{_num(b['auroc_by_lang'].get(lang))} |" for lang, v in j["auroc_by_lang"].items()]
    return "\n".join(lines + _charts(charts))


# -- charts (matplotlib's Agg canvas, imported only when a report is written) -----------------------


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=FIGURE_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _strip(ax: Any, groups: Sequence[Sequence[float]], labels: Sequence[str], color: str = "tab:blue") -> None:
    """A box plot with every value drawn over it, jittered the same way every time."""
    import numpy as np

    rng = np.random.default_rng(0)
    ax.boxplot([list(g) or [np.nan] for g in groups], widths=0.5, showfliers=False)
    for i, values in enumerate(groups, start=1):
        ax.scatter(i + rng.uniform(-0.12, 0.12, len(values)), values, s=18, alpha=0.6, color=color, zorder=3)
    ax.set_xticks(range(1, len(labels) + 1), labels)


def score_chart(records: Sequence[dict[str, Any]], path: Path) -> None:
    import numpy as np
    from matplotlib.ticker import MaxNLocator

    figure = _figure(8, 3.6)
    bins = np.linspace(0, 1, 11)
    series = [("faithfulness", [r["faithfulness"] for r in records if r["status"] == "scored"], "tab:blue"),
              ("token F1", [r["correctness"]["token_f1"] for r in records if r["correctness"]], "tab:orange")]
    for ax, (name, values, color) in zip(figure.subplots(1, 2), series, strict=True):
        ax.hist(values, bins=bins, color=color, edgecolor="white", label=f"{name} (n={len(values)})")
        ax.set(title=f"{name} per row", xlabel=f"{name} (0-1)", ylabel="rows", xlim=(0, 1))
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # rows are counted, not measured
        ax.legend(loc="upper left")
    figure.suptitle("Score distribution")
    figure.savefig(path)


def hit_chart(records: Sequence[dict[str, Any]], path: Path, k: int = 5) -> None:
    rows = [r for r in records if r["status"] == "scored" and r["retrieval"]]
    hit = [r["faithfulness"] for r in rows if r["retrieval"][f"hit@{k}"]]
    miss = [r["faithfulness"] for r in rows if not r["retrieval"][f"hit@{k}"]]
    figure = _figure(6, 4)
    ax = figure.subplots()
    _strip(ax, [hit, miss], [f"reference source\nin top {k} (n={len(hit)})", f"not in top {k}\n(n={len(miss)})"])
    ax.scatter([], [], s=18, color="tab:blue", label=f"one scored row (n={len(rows)})")
    ax.set(title=f"Faithfulness by retrieval hit@{k}", ylabel="faithfulness", ylim=(-0.05, 1.05))
    ax.legend(loc="lower right")
    figure.savefig(path)


def latency_chart(records: Sequence[dict[str, Any]], path: Path) -> None:
    import numpy as np

    stages = [s for s in STAGES if s != "answer"]
    values = [[r["timings_ms"][s] / 1000 for r in records if r["timings_ms"].get(s) is not None] for s in stages]
    figure = _figure(7, 4)
    ax = figure.subplots()
    _strip(ax, values, [f"{s}\n(n={len(v)})" for s, v in zip(stages, values, strict=True)], color="tab:gray")
    p95 = [float(np.percentile(v, 95)) if v else np.nan for v in values]
    ax.scatter(range(1, len(stages) + 1), p95, marker="D", color="tab:red", zorder=4, label="p95")
    ax.plot([], [], color="tab:orange", label="p50 (line in box)")
    ax.set(title="Latency per stage, one point per row", ylabel="seconds")
    ax.legend(loc="upper left")
    figure.savefig(path)


def validation_chart(records: Sequence[dict[str, Any]], summary: dict[str, Any], path: Path) -> None:
    first = [r for r in records if r["run"] == 1]
    figure = _figure(11, 4)
    panels = [("score", f"judge {summary['judge_model']}, run 1", summary["judge"]["auroc"]["runs"][0]),
              ("support", "support check", summary["support"]["auroc"]),
              ("baseline", "word-overlap baseline", summary["baseline"]["auroc"])]
    for ax, (key, title, auc) in zip(figure.subplots(1, 3, sharey=True), panels, strict=True):
        groups = [[r[key] for r in first if r["label"] == label and r[key] is not None]
                  for label in ("supported", "unsupported")]
        _strip(ax, groups, [f"supported\n(n={len(groups[0])})", f"unsupported\n(n={len(groups[1])})"])
        ax.set(title=f"{title}\nAUROC {_num(auc)}", ylabel="score (0-1)", ylim=(-0.05, 1.05), xlabel="label")
    figure.suptitle("Scores of labelled answers")
    figure.savefig(path)


# -- whole reports ----------------------------------------------------------------------------------


def _write(out: Path, records: Sequence[dict[str, Any]], summary: dict[str, Any], charts: Mapping[str, Chart],
           markdown: Callable[[list[str]], str]) -> list[Path]:
    """results.jsonl, summary.json, the charts when matplotlib is there, and report.md; the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(out / "results.jsonl", records)
    write_json(out / "summary.json", summary)
    drawn = list(charts) if can_draw() else []
    for name in drawn:
        charts[name](out / name)
    (out / "report.md").write_text(markdown(drawn), encoding="utf-8")
    return [out / n for n in ("report.md", "summary.json", "results.jsonl", *drawn)]


def write_run_report(out: Path, records: Sequence[dict[str, Any]], summary: dict[str, Any]) -> list[Path]:
    charts = {"scores.png": partial(score_chart, records), "faithfulness_by_hit.png": partial(hit_chart, records),
              "latency.png": partial(latency_chart, records)}
    return _write(out, records, summary, charts, partial(run_markdown, summary, records))


def write_validation_report(out: Path, records: Sequence[dict[str, Any]], summary: dict[str, Any]) -> list[Path]:
    charts = {"scores_by_label.png": partial(validation_chart, records, summary)}
    return _write(out, records, summary, charts, partial(validation_markdown, summary))
