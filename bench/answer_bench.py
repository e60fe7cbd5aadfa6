"""Answers a reader can trust: each answer mode on the labelled QA set over data/docs, on the bundled models.

    python bench/answer_bench.py            # needs an engine at OLLAMA_HOST (`rag engine`), ~30 min on 2 cores

For each question of data/eval/answers.jsonl (answerable ones with the facts an answer must hold, and ones the
documents do not cover), /ask (in-process, through the app) in each mode at top_k 5:
- key-fact rate: answerable questions whose answer holds every expected fact;
- supported sentences: the share of the answer's sentences the support check finds a source span for
  (the notice before quoted evidence is not a sentence of the answer);
- declined: not-covered questions declined; falsely declined: answerable ones declined;
- /ask p50/p95 and mean answer length.
"before": the same prompts sent the way the pipeline did before the sentence gate (RAG_NUM_PREDICT tokens, no
repetition or header stop, nothing checked), on the first 8 answerable questions, for length and time.
Writes bench/results/answers.md and every answer to bench/results/answers.jsonl, to be read by hand.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fastapi.testclient import TestClient  # noqa: E402

from ingest.run import ingest_folder  # noqa: E402
from rag.answer.models import Source  # noqa: E402
from rag.answer.prompts import build_messages, language_of  # noqa: E402
from rag.config import Settings  # noqa: E402
from rag.ollama import build_llm  # noqa: E402
from rag.serve.app import create_app  # noqa: E402

MODES = ("extract", "auto", "generate")
TOP_K = 5
BEFORE = 6
# generate (today's behaviour, the slowest on 2 shared cores) runs on every second question; the others on all.
SAMPLE = {"extract": 1, "auto": 1, "generate": 2}


def has_facts(answer: str, facts: list[str]) -> bool:
    flat = " ".join(answer.lower().split())
    return bool(facts) and all(" ".join(f.lower().split()) in flat for f in facts)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")


def run_mode(client: TestClient, rows: list[dict[str, Any]], mode: str) -> list[dict[str, Any]]:
    out = []
    for row in rows:
        started = time.perf_counter()
        r = client.post("/ask", json={"question": row["question"], "top_k": TOP_K, "answer_mode": mode})
        ms = (time.perf_counter() - started) * 1000
        body = r.json()
        if r.status_code != 200:
            raise SystemExit(f"/ask answered {r.status_code} for {row['id']}: {r.text}")
        out.append({"id": row["id"], "mode": mode, "question": row["question"], "covered": row["covered"],
                    "facts": row["facts"], "status": r.status_code, "answer": body.get("answer", ""),
                    "answer_source": body.get("answer_source"), "abstained": body.get("abstained"),
                    "claims": [(c["supported"], c["text"]) for c in body.get("claims", [])],
                    "model_answer": body.get("model_answer"), "ms": round(ms, 1),
                    "sources": [s["source"] for s in body.get("sources", [])]})
        print(f"{mode:8} {row['id']} {ms:8.0f} ms {out[-1]['answer'][:90]!r}", flush=True)
    return out


def before(settings: Settings, client: TestClient, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The old path: the same sources and prompt, RAG_NUM_PREDICT tokens, no gate."""
    llm = build_llm(settings, stops=["\nQuestion:", "\n问题：", "\nSources:", "\n资料：", "\n["])
    out = []
    for row in rows:
        found = client.post("/ask", json={"question": row["question"], "top_k": TOP_K, "answer_mode": "extract"})
        sources = [Source(**s) for s in found.json()["sources"]]
        started = time.perf_counter()
        text = llm.chat(build_messages(row["question"], sources, language_of(row["question"]))).message.content or ""
        out.append({"id": row["id"], "answer": text.strip(), "ms": (time.perf_counter() - started) * 1000,
                    "facts": row["facts"]})
        print(f"before   {row['id']} {out[-1]['ms']:8.0f} ms {text[:90]!r}", flush=True)
    return out


def summary(records: list[dict[str, Any]]) -> dict[str, Any]:
    answerable = [r for r in records if r["covered"]]
    uncovered = [r for r in records if not r["covered"]]
    claims = [ok for r in records if not r["abstained"] for ok, _ in r["claims"]]
    return {
        "key_fact_rate": sum(has_facts(r["answer"], r["facts"]) for r in answerable) / len(answerable),
        "supported_sentences": sum(claims) / len(claims) if claims else float("nan"),
        "declined": sum(bool(r["abstained"]) for r in uncovered) / len(uncovered),
        "falsely_declined": sum(bool(r["abstained"]) for r in answerable) / len(answerable),
        "from_evidence": sum(r["answer_source"] == "evidence" for r in records) / len(records),
        "p50": pct([r["ms"] for r in records], 0.5), "p95": pct([r["ms"] for r in records], 0.95),
        "chars": statistics.fmean(len(r["answer"]) for r in records),
        "errors": sum(r["status"] != 200 for r in records),
    }


def main() -> None:
    # `python bench/answer_bench.py extract auto`: only these modes (and no "before"), written to answers-quiet.*
    modes = tuple(a for a in sys.argv[1:] if a in MODES) or MODES
    stem = "answers" if modes == MODES else "answers-" + "-".join(modes)
    rows = [json.loads(line) for line in (ROOT / "data/eval/answers.jsonl").read_text().splitlines()]
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(_env_file=None, storage_dir=Path(tmp), top_k=TOP_K,  # type: ignore[call-arg]
                            ollama_host=os.environ.get("OLLAMA_HOST", "127.0.0.1:11434"),
                            allowed_hosts="testserver")  # the Host the in-process client sends
        ingest_folder(ROOT / "data/docs", settings)
        with TestClient(create_app(settings)) as client:
            client.post("/ask", json={"question": "warm up", "answer_mode": "extract"})
            results = {mode: run_mode(client, rows[::SAMPLE[mode]], mode) for mode in modes}
            sample = [r for r in rows[::SAMPLE["generate"]] if r["covered"]][:BEFORE]
            old = before(settings, client, sample) if "generate" in modes else []
    figures = {mode: summary(records) for mode, records in results.items()}
    with (ROOT / f"bench/results/{stem}.jsonl").open("w") as f:
        for records in results.values():
            for r in records:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
    answerable = sum(r["covered"] for r in rows)
    ids = {r["id"] for r in old}
    lines = [
        "# Answer modes on data/eval/answers.jsonl (bundled models)", "",
        f"`python bench/answer_bench.py {' '.join(modes) if modes != MODES else ''}`; {answerable} answerable and "
        f"{len(rows) - answerable} not covered questions, top_k {TOP_K}, SmolLM2-135M and all-MiniLM-L6-v2 through "
        f"the local engine, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end. Every answer "
        f"is in bench/results/{stem}.jsonl.", "",
        "| mode | key-fact rate | supported sentences | declined (not covered) | falsely declined | answered from "
        "evidence | /ask p50 ms | p95 ms | mean answer chars |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for mode, f in figures.items():
        label = mode if SAMPLE[mode] == 1 else f"{mode} (every {SAMPLE[mode]}nd question)"
        lines.append(f"| {label} | {f['key_fact_rate']:.2f} | {f['supported_sentences']:.2f} | {f['declined']:.2f} | "
                     f"{f['falsely_declined']:.2f} | {f['from_evidence']:.2f} | {f['p50']:.0f} | {f['p95']:.0f} | "
                     f"{f['chars']:.0f} |")
    gen = [r for r in results.get("generate", []) if r["id"] in ids]
    lines += [] if not old else [
        "", f"Generation hygiene, on {len(old)} answerable questions (generate mode vs the old path):", "",
        "| | key facts | mean ms | p95 ms | mean chars |", "|---|---|---|---|---|",
        f"| before (256 tokens, no gate) | {sum(has_facts(r['answer'], r['facts']) for r in old)}/{len(old)} | "
        f"{statistics.fmean(r['ms'] for r in old):.0f} | {pct([r['ms'] for r in old], 0.95):.0f} | "
        f"{statistics.fmean(len(r['answer']) for r in old):.0f} |",
        f"| after (factoid budget, loop/header stop) | "
        f"{sum(has_facts(r['answer'], r['facts']) for r in gen)}/{len(gen)} | "
        f"{statistics.fmean(r['ms'] for r in gen):.0f} | {pct([r['ms'] for r in gen], 0.95):.0f} | "
        f"{statistics.fmean(len(r['answer']) for r in gen):.0f} |",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    (ROOT / f"bench/results/{stem}.md").write_text(text)


if __name__ == "__main__":
    main()
