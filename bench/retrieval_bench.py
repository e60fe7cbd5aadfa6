"""Retrieval quality of vector, keyword and hybrid search on data/eval/retrieval, and keyword-search latency.

Run: python bench/retrieval_bench.py   (starts the real engine on a free port; writes bench/results/retrieval.txt)

Each passage becomes one Markdown file (`# title` + text) ingested by `ingest_folder`, the code path of
`rag ingest`; questions go through `RagPipeline.retrieve`, the code path of `/retrieve`, with top_k=10.
A question is a hit at k when a chunk of its labelled passage is among the first k sources.
"""

from __future__ import annotations

import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ["HF_HUB_OFFLINE"] = os.environ["TRANSFORMERS_OFFLINE"] = "1"

from ingest.run import ingest_folder  # noqa: E402
from rag.answer.pipeline import RagPipeline  # noqa: E402
from rag.config import Settings  # noqa: E402
from rag.index.bm25 import KeywordIndex, build_index, save_index  # noqa: E402
from rag.index.chroma import ChromaStore  # noqa: E402
from rag.index.tokens import Tokenizer  # noqa: E402
from tests.support.servers import running_engine  # noqa: E402

DATA = ROOT / "data" / "eval" / "retrieval"
OUT = ROOT / "bench" / "results" / "retrieval.txt"
TOP_K = 10
GROUPS = ("all", "en", "zh", "paraphrase", "identifier", "keyword", "cross_lang")
LATENCY_SIZES = (10_000, 100_000)
LATENCY_QUERIES = 300

lines: list[str] = []


def say(text: str = "") -> None:
    print(text, flush=True)
    lines.append(text)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def groups_of(q: dict[str, Any]) -> list[str]:
    return ["all", q["lang"], q["kind"], *(["cross_lang"] if q["cross_lang"] else [])]


# -- quality ------------------------------------------------------------------------------------------


def rank_of(sources: list[str], gold: str) -> int | None:
    return next((i for i, s in enumerate(sources, start=1) if s == gold), None)


def evaluate(questions: list[dict[str, Any]], search: Callable[[str], list[str]]) -> dict[str, list[int | None]]:
    ranks: dict[str, list[int | None]] = defaultdict(list)
    for q in questions:
        r = rank_of(search(q["question"]), f"{q['passage_id']}.md")
        for g in groups_of(q):
            ranks[g].append(r)
    return ranks


def metrics(ranks: list[int | None]) -> tuple[float, float, float]:
    n = len(ranks)
    hit1 = sum(1 for r in ranks if r is not None and r <= 1) / n
    hit5 = sum(1 for r in ranks if r is not None and r <= 5) / n
    mrr = sum(1 / r for r in ranks if r is not None and r <= 10) / n
    return hit1, hit5, mrr


def table(title: str, rows: dict[str, dict[str, list[int | None]]]) -> None:
    say(title)
    say(f"{'':26}" + "".join(f"{g:>22}" for g in GROUPS))
    counts = next(iter(rows.values()))
    say(f"{'(questions)':26}" + "".join(f"{len(counts[g]):>22}" for g in GROUPS))
    say(f"{'':26}" + "".join(f"{'hit@1  hit@5  MRR@10':>22}" for _ in GROUPS))
    for name, ranks in rows.items():
        cells = "".join("{:>8.3f}{:>7.3f}{:>7.3f}".format(*metrics(ranks[g])) for g in GROUPS)
        say(f"{name:26}{cells}")
    say()


def ingest_passages(passages: list[dict[str, Any]], root: Path, settings: Settings) -> None:
    for p in passages:
        (root / f"{p['id']}.md").write_text(f"# {p['title']}\n\n{p['text']}\n", encoding="utf-8")
    summary = ingest_folder(root, settings).summary
    if summary is None or summary.failed:
        raise SystemExit(f"ingesting the passages failed: {summary}")
    say(f"ingested {summary.added} passages as {summary.chunks_written} chunks "
        f"({summary.chunks_tokenized} tokenised for the keyword index)")


def pipeline_search(pipeline: RagPipeline, mode: str) -> Callable[[str], list[str]]:
    return lambda question: [s.source for s in pipeline.retrieve(question, TOP_K, mode)]


def quality(settings: Settings, questions: list[dict[str, Any]]) -> None:
    store = ChromaStore.open(settings)

    def pipe(**update: Any) -> RagPipeline:
        return RagPipeline.open(settings.model_copy(update=update), store)

    main = {
        "vector": evaluate(questions, pipeline_search(pipe(), "vector")),
        "keyword": evaluate(questions, pipeline_search(pipe(), "keyword")),
        "hybrid rrf (k=60)": evaluate(questions, pipeline_search(pipe(fusion="rrf"), "hybrid")),
        "hybrid weighted (default)": evaluate(questions, pipeline_search(pipe(fusion="weighted"), "hybrid")),
    }
    table(f"== Retrieval quality, top_k={TOP_K}, {settings.retrieval_candidates} candidates per side", main)
    sweep = {
        **{f"rrf k={k}": evaluate(questions, pipeline_search(pipe(fusion="rrf", rrf_k=k), "hybrid"))
           for k in (10, 30, 60, 100)},
        **{f"weighted w={w}": evaluate(
            questions, pipeline_search(pipe(fusion="weighted", fusion_vector_weight=w), "hybrid"))
           for w in (0.3, 0.5, 0.7)},
    }
    table("== Fusion parameters (a sweep on the same questions: read as sensitivity, not as tuning)", sweep)
    tokenizer_variants(store, questions)


def tokenizer_variants(store: ChromaStore, questions: list[dict[str, Any]]) -> None:
    """Keyword mode with other tokeniser choices, built in memory from the same chunks."""
    got = store.collection.get(include=["documents", "metadatas"])
    source_of = {cid: meta["source"] for cid, meta in zip(got["ids"], got["metadatas"], strict=True)}
    rows: dict[str, dict[str, list[int | None]]] = {}
    for label, tok in [
        ("jieba search, whole terms", Tokenizer("search")),
        ("jieba search, + parts", Tokenizer("search", parts=True)),
        ("jieba search, HMM", Tokenizer("search", hmm=True)),
        ("jieba precise", Tokenizer("precise")),
        ("jieba precise, HMM", Tokenizer("precise", hmm=True)),
    ]:
        with tempfile.TemporaryDirectory() as tmp:
            texts = zip(got["ids"], got["documents"], strict=True)
            bm25, ids = build_index(sorted((cid, " ".join(tok.tokens(text))) for cid, text in texts))
            save_index(Path(tmp), bm25, ids, 1)
            index = KeywordIndex(Path(tmp), tok)
            index.reload()
            rows[label] = evaluate(questions, lambda q, i=index: _dedup(source_of[h.chunk_id] for h in i.search(q, 40)))
    table("== Keyword tokeniser variants (keyword mode only)", rows)


def _dedup(sources: Any) -> list[str]:
    return list(dict.fromkeys(sources))[:TOP_K]


# -- latency ---------------------------------------------------------------------------------------------


def synthetic_corpus(n: int, questions: list[dict[str, Any]], rng: random.Random) -> list[tuple[str, str]]:
    """Mixed English and Chinese chunks of about 120 words, Zipf-distributed over a 30k-word vocabulary."""
    tok = Tokenizer()
    real = sorted({t for q in questions for t in tok.tokens(q["question"])})
    zh = [w for w in real if not w.isascii()] + [f"系统{i}" for i in range(2000)]
    en = [w for w in real if w.isascii()] + [f"term{i}" for i in range(25000)]
    ident = [f"E{i:04d}" for i in range(3000)] + [f"PN-{i}-B" for i in range(3000)]
    weights_en = [1 / (r + 1) for r in range(len(en))]
    weights_zh = [1 / (r + 1) for r in range(len(zh))]
    chunks = []
    for i in range(n):
        words = [*rng.choices(en, weights_en, k=80), rng.choice(ident)]
        text = " ".join(words) + "。" + "".join(rng.choices(zh, weights_zh, k=40)) + "。"
        chunks.append((f"c{i:07d}", text))
    return chunks


def latency(questions: list[dict[str, Any]]) -> None:
    say("== Keyword search latency (synthetic mixed en/zh chunks, one process, 2 cores, top 20 per query)")
    say(f"{'chunks':>8} {'tokenise':>10} {'build':>8} {'save':>7} {'load':>7} {'index MB':>9} {'tokens MB':>10} "
        f"{'p50 ms':>7} {'p95 ms':>7}")
    rng = random.Random(11)
    queries = [q["question"] for q in questions] + [f"What does E{i:04d} mean?" for i in range(100)]
    for n in LATENCY_SIZES:
        corpus = synthetic_corpus(n, questions, rng)
        tok = Tokenizer()
        t0 = time.perf_counter()
        rows = [(cid, " ".join(tok.tokens(text))) for cid, text in corpus]
        t1 = time.perf_counter()
        bm25, ids = build_index(rows)
        t2 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            save_index(Path(tmp), bm25, ids, 1)
            t3 = time.perf_counter()
            index = KeywordIndex(Path(tmp))
            index.reload()
            t4 = time.perf_counter()
            size = sum(f.stat().st_size for f in Path(tmp).rglob("*") if f.is_file()) / 1e6
            times = []
            for i in range(LATENCY_QUERIES):
                q = queries[i % len(queries)]
                start = time.perf_counter()
                index.search(q, 20)
                times.append((time.perf_counter() - start) * 1000)
        p50, p95 = statistics.median(times), statistics.quantiles(times, n=20)[18]
        tokens_mb = sum(len(cid) + len(t.encode()) for cid, t in rows) / 1e6  # what tokens.sqlite3 holds
        say(f"{n:>8} {t1 - t0:>9.1f}s {t2 - t1:>7.1f}s {t3 - t2:>6.2f}s {t4 - t3:>6.2f}s {size:>9.1f} "
            f"{tokens_mb:>10.1f} {p50:>7.2f} {p95:>7.2f}")
    say()


def main() -> None:
    passages = read_jsonl(DATA / "passages.jsonl")
    questions = read_jsonl(DATA / "questions.jsonl")
    say(f"# Retrieval benchmark: {len(passages)} passages, {len(questions)} questions (data/eval/retrieval)")
    say(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
        f"embeddings: all-minilm on the bundled engine; load average at start {os.getloadavg()[0]:.1f}")
    say()
    with tempfile.TemporaryDirectory(prefix="retrieval-bench-") as tmp, running_engine("real") as url:
        root = Path(tmp) / "passages"
        root.mkdir()
        settings = Settings(_env_file=None, ollama_host=url, storage_dir=Path(tmp) / "storage")  # type: ignore[call-arg]
        ingest_passages(passages, root, settings)
        say()
        quality(settings, questions)
    latency(questions)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"written to {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
