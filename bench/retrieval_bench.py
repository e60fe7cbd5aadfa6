"""Retrieval quality of vector, keyword and hybrid search, abstention, and /retrieve latency, on three sets.

Run: pip install -e '.[bench]'; python bench/retrieval_bench.py
(starts the real engine on a free port; writes bench/results/retrieval.txt)
     python bench/retrieval_bench.py --keyword-latency
(only the keyword index's tokenise / build / load / search figures, no engine; writes
bench/results/keyword-latency.txt)

Sets: `own` is data/eval/retrieval (our 120 passages, en and zh); `drcd` (Chinese, DRCD dev) and `squad`
(English, SQuAD 2.0 dev) are public, fetched and built by bench/public_sets.py into bench/.cache/ (gitignored;
read its docstring for the fetch step). Parameters (the fusion's and the abstention's) were chosen on the
`tune` part of drcd and squad only; every figure called "report" is from the other part, and `own` was
not used to choose anything.

Each passage becomes one Markdown file (`# title` + text) ingested by `ingest_folder`, the code path of
`rag ingest`, into a cached storage dir (a rerun embeds nothing). Question embeddings are cached too. Each
question's candidates from both sides are taken as `HybridRetriever.sources` takes them, and every mode is
ranked by the code the retriever runs (`rank`), top_k 10. A question is a hit at k when a chunk of its
labelled passage is among the first k sources. Abstention is `rag.answer.coverage`, as the pipeline calls it;
its ceiling section asks how far one threshold on one retrieval signal could go at all.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ["HF_HUB_OFFLINE"] = os.environ["TRANSFORMERS_OFFLINE"] = "1"

import numpy as np  # noqa: E402
import public_sets  # noqa: E402

from ingest.run import ingest_folder  # noqa: E402
from rag.answer import coverage  # noqa: E402
from rag.answer.pipeline import RagPipeline  # noqa: E402
from rag.config import Settings  # noqa: E402
from rag.index.bm25 import KeywordIndex, build_index, build_index_from_term_ids, save_index  # noqa: E402
from rag.index.chroma import ChromaStore, Record  # noqa: E402
from rag.index.tokens import Tokenizer  # noqa: E402
from tests.support.servers import running_engine  # noqa: E402

OWN = ROOT / "data" / "eval" / "retrieval"
CACHE = public_sets.CACHE
OUT = ROOT / "bench" / "results" / "retrieval.txt"
TOP_K = 10
SETS = ("own", "drcd", "squad")
LATENCY_SIZES = (10_000, 100_000)
LATENCY_QUERIES = 300

lines: list[str] = []


def say(text: str = "") -> None:
    print(text, flush=True)
    lines.append(text)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def load_set(name: str) -> dict[str, Any]:
    if name != "own":
        return public_sets.load(name)
    questions = [
        {**q, "type": q["kind"], "kind": "answerable", "part": "report"} for q in read_jsonl(OWN / "questions.jsonl")
    ]
    return {"passages": read_jsonl(OWN / "passages.jsonl"), "questions": questions}


# -- the index and each question's candidates (cached) ---------------------------------------------------


def settings_for(name: str, url: str) -> Settings:
    return Settings(_env_file=None, ollama_host=url, storage_dir=CACHE / "index" / name / "storage")  # type: ignore[call-arg]


def index_set(name: str, passages: list[dict[str, Any]], settings: Settings) -> None:
    """One Markdown file per passage, ingested by `rag ingest`'s code path; unchanged files cost nothing."""
    root = CACHE / "index" / name / "passages"
    root.mkdir(parents=True, exist_ok=True)
    for p in passages:
        path = root / f"{_file_id(p['id'])}.md"
        text = f"# {p['title']}\n\n{p['text']}\n"
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
    summary = ingest_folder(root, settings).summary
    if summary is None or summary.failed:
        raise SystemExit(f"ingesting the {name} passages failed: {summary}")
    say(f"{name}: {len(passages)} passages, {ChromaStore.open(settings).count()} chunks "
        f"({summary.added} files added in this run)")


def _file_id(passage_id: str) -> str:
    """A file name for a passage id (titles may hold '/' and other characters a path cannot)."""
    if passage_id.replace("-", "").replace("_", "").isalnum() and passage_id.isascii():
        return passage_id
    return hashlib.sha1(passage_id.encode()).hexdigest()[:16]


def question_vectors(name: str, questions: list[dict[str, Any]], pipeline: RagPipeline) -> dict[str, list[float]]:
    path = CACHE / "vectors" / f"{name}-{pipeline.settings.embed_model.replace(':', '_')}.json"
    cached: dict[str, list[float]] = json.loads(path.read_text()) if path.exists() else {}
    todo = [q["question"] for q in questions if q["question"] not in cached]
    for text in todo:
        cached[text] = pipeline.retriever.embedder.embed_query(text)
    if todo:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(cached))
    return cached


# -- quality ---------------------------------------------------------------------------------------------

Ranks = dict[str, list[int | None]]
Search = Callable[[dict[str, Any]], list[str]]


def rank_of(sources: list[str], gold: str) -> int | None:
    return next((i for i, s in enumerate(sources, start=1) if s == gold), None)


def evaluate(questions: list[dict[str, Any]], search: Search) -> Ranks:
    """Ranks of the labelled passage, grouped by language (and by question type on our own set)."""
    ranks: Ranks = defaultdict(list)
    for q in questions:
        r = rank_of(search(q), f"{_file_id(q['passage_id'])}.md")
        for g in ("all", q["lang"], *([q["type"]] if "type" in q else [])):
            ranks[g].append(r)
    return ranks


def metrics(ranks: list[int | None]) -> tuple[float, float, float]:
    n = len(ranks)
    hit1 = sum(1 for r in ranks if r is not None and r <= 1) / n
    hit5 = sum(1 for r in ranks if r is not None and r <= 5) / n
    mrr = sum(1 / r for r in ranks if r is not None and r <= 10) / n
    return hit1, hit5, mrr


def table(title: str, rows: dict[str, Ranks], groups: Iterable[str]) -> None:
    groups = [g for g in groups if g in next(iter(rows.values()))]
    say(title)
    say(f"{'':30}" + "".join(f"{g:>22}" for g in groups))
    counts = next(iter(rows.values()))
    say(f"{'(questions)':30}" + "".join(f"{len(counts[g]):>22}" for g in groups))
    say(f"{'':30}" + "".join(f"{'hit@1  hit@5  MRR@10':>22}" for _ in groups))
    for name, ranks in rows.items():
        cells = "".join("{:>8.3f}{:>7.3f}{:>7.3f}".format(*metrics(ranks[g])) for g in groups)
        say(f"{name:30}{cells}")
    say()


def searcher(pipeline: RagPipeline, mode: str, vectors: dict[str, list[float]], top_k: int = TOP_K) -> Search:
    """/retrieve's code path with the question's embedding already made."""
    return lambda q: [s.source for s in pipeline.retrieve(q["question"], top_k, mode, vectors[q["question"]])]


def variants(settings: Settings) -> dict[str, Settings]:
    return {
        "vector": settings,
        "keyword": settings,
        f"hybrid adaptive s={settings.fusion_sharpness:g} (default)": settings,
        "hybrid weighted w=0.5 (before)": settings.model_copy(update={"fusion": "weighted"}),
        "hybrid rrf k=60": settings.model_copy(update={"fusion": "rrf"}),
    }


def quality(name: str, data: dict[str, Any], settings: Settings, vectors: dict[str, list[float]]) -> None:
    store = ChromaStore.open(settings)
    answerable = [q for q in data["questions"] if q["kind"] == "answerable"]
    groups = ("all", "en", "zh", "paraphrase", "identifier", "keyword", "cross_lang")
    for part in ("tune", "report"):
        questions = [q for q in answerable if q["part"] == part]
        if not questions:
            continue
        rows = {}
        for label, s in variants(settings).items():
            mode = label.split()[0]
            rows[label] = evaluate(questions, searcher(RagPipeline.open(s, store), mode, vectors))
        table(f"== {name}, {part} part: retrieval quality, top_k={TOP_K}, "
              f"{settings.retrieval_candidates} candidates per side", rows, groups)
    tune = [q for q in answerable if q["part"] == "tune"]
    if tune:
        sweep = {f"adaptive s={x:g}": evaluate(tune, searcher(
            RagPipeline.open(settings.model_copy(update={"fusion_sharpness": x}), store), "hybrid", vectors))
            for x in SHARPNESS}
        table(f"== {name}, tune part: the sharpness sweep (s=0: the weights by agreement alone)", sweep,
              ("all", "en", "zh"))


SHARPNESS = (0, 1, 2, 3, 4)


def tokenizer_variants(store: ChromaStore, questions: list[dict[str, Any]]) -> None:
    """Keyword mode with other tokeniser choices, built in memory from the same chunks."""
    records = list(store.all_records())
    source_of = {r.id: r.metadata["source"] for r in records}
    rows: dict[str, dict[str, list[int | None]]] = {}
    for label, tok in [
        ("jieba search, whole terms", Tokenizer("search")),
        ("jieba search, + parts", Tokenizer("search", parts=True)),
        ("jieba search, HMM", Tokenizer("search", hmm=True)),
        ("jieba precise", Tokenizer("precise")),
        ("jieba precise, HMM", Tokenizer("precise", hmm=True)),
    ]:
        with tempfile.TemporaryDirectory() as tmp:
            bm25, ids = build_index(sorted((r.id, " ".join(tok.tokens(r.text))) for r in records))
            save_index(Path(tmp), bm25, ids, 1)
            index = KeywordIndex(Path(tmp), tok)
            index.reload()
            rows[label] = evaluate(
                questions, lambda q, i=index: _dedup(source_of[h.chunk_id] for h in i.search(q["question"], 40)))
    table("== own: keyword tokeniser variants (keyword mode only)", rows, ("all", "en", "zh"))


def _dedup(sources: Any) -> list[str]:
    return list(dict.fromkeys(sources))[:TOP_K]


# -- abstention ------------------------------------------------------------------------------------------


def declined(pipeline: RagPipeline, q: dict[str, Any], vectors: dict[str, list[float]], rule: str) -> bool:
    """Whether /ask would say "the documents do not cover this": the sources /ask takes (top_k 4, hybrid),
    filtered by rag.answer.coverage (`rule` "coverage"), or by the rule it replaced ("before")."""
    s = pipeline.settings
    found = pipeline.retrieve(q["question"], s.top_k, "hybrid", vectors[q["question"]])
    if rule == "before":  # cosine >= RAG_MIN_SCORE, or any keyword hit
        return not any((x.vector_score or 0.0) >= s.min_score or (x.keyword_score or 0.0) > 0 for x in found)
    return not coverage.relevant(q["question"], found, "hybrid", pipeline.keywords, s)


def abstention(name: str, data: dict[str, Any], settings: Settings, vectors: dict[str, list[float]]) -> None:
    pipeline = RagPipeline.open(settings)
    say(f"== {name}: abstention (/ask's sources, top_k={settings.top_k}, hybrid): share of questions declined")
    say(f"{'':10}{'':24}{'answerable':>12}{'near':>8}{'far':>8}{'all unanswerable':>18}")
    for part in ("tune", "report"):
        for lang in ("en", "zh"):
            qs = [q for q in data["questions"] if q["part"] == part and q["lang"] == lang]
            if not qs:
                continue
            for rule in ("coverage", "before"):
                cells = []
                for kinds in (("answerable",), ("near",), ("far",), ("near", "far")):
                    chosen = [q for q in qs if q["kind"] in kinds]
                    rate = sum(declined(pipeline, q, vectors, rule) for q in chosen) / len(chosen) if chosen else None
                    cells.append(f"{rate:.3f} ({len(chosen)})" if rate is not None else "-")
                label = "rag.answer.coverage" if rule == "coverage" else "before (cosine or any term)"
                say(f"{part + ' ' + lang:10}{label:24}" + "".join(f"{c:>14}" for c in cells))
    say()


def evidence_rows(data: dict[str, Any], settings: Settings, vectors: dict[str, list[float]]
                  ) -> list[tuple[str, bool, float, bool, float]]:
    """Per question: (part, unanswerable?, matched, agreed, best cosine), on the sources /ask takes."""
    pipeline = RagPipeline.open(settings)
    assert pipeline.keywords is not None
    rows = []
    for q in data["questions"]:
        found = pipeline.retrieve(q["question"], pipeline.settings.top_k, "hybrid", vectors[q["question"]])
        e = coverage.evidence(q["question"], found, pipeline.keywords)
        cosine = max((x.vector_score or 0.0 for x in found), default=0.0)
        rows.append((q["part"], q["kind"] != "answerable", e.matched, e.agreed, cosine))
    return rows


CEILING_RULES: dict[str, Callable[[tuple[str, bool, float, bool, float], float], bool]] = {
    "matched < t, unless the sides agree (ours)": lambda r, t: r[2] < t and not r[3],
    "matched < t": lambda r, t: r[2] < t,
    "best cosine < t": lambda r, t: r[4] < t,
}
MAX_FALSE = 0.05


def _rates(rows: list[tuple[str, bool, float, bool, float]], rule: Callable[..., bool], t: float
           ) -> tuple[float, float]:
    """(share of unanswerable declined, share of answerable declined) when declining by `rule` at `t`."""
    out = [sum(rule(r, t) for r in rows if r[1] is unanswerable) / max(1, sum(r[1] is unanswerable for r in rows))
           for unanswerable in (True, False)]
    return out[0], out[1]


def _best_threshold(rows: list[tuple[str, bool, float, bool, float]], rule: Callable[..., bool]) -> float:
    """The t declining the most unanswerable questions of `rows` with at most MAX_FALSE answerable declined."""
    grid = [i / 100 for i in range(101)]
    allowed = [t for t in grid if _rates(rows, rule, t)[1] <= MAX_FALSE]
    return max(allowed, key=lambda t: (_rates(rows, rule, t)[0], -_rates(rows, rule, t)[1]), default=0.0)


def abstention_ceiling(rows: dict[str, list[tuple[str, bool, float, bool, float]]]) -> None:
    """How far one threshold on this evidence can go: t chosen on the tune parts (both sets), reported on
    the report parts; and t chosen on each report part itself, an upper bound that no tuning can beat."""
    say("== abstention ceiling of retrieval evidence (/ask's sources, hybrid, top_k 4): declined / falsely declined")
    say(f"   one threshold t on a 0.01 grid; 'tuned': t declining the most unanswerable questions of both tune "
        f"parts with <= {MAX_FALSE} answerable declined; 'best on report': the same choice made on each report "
        "part itself (an upper bound)")
    sets = [name for name in rows if name != "own"]
    tune = [r for name in sets for r in rows[name] if r[0] == "tune"]
    header = "".join(f"{name + ' tuned':>22}{name + ' best on report':>30}" for name in sets)
    say(f"{'rule':46}{'t':>6}{header}")
    for label, rule in CEILING_RULES.items():
        t = _best_threshold(tune, rule)
        cells = ""
        for name in sets:
            report = [r for r in rows[name] if r[0] == "report"]
            d, f = _rates(report, rule, t)
            best = _best_threshold(report, rule)
            bd, bf = _rates(report, rule, best)
            cells += f"{f'{d:.3f} / {f:.3f}':>22}{f'{bd:.3f} / {bf:.3f} (t={best:.2f})':>30}"
        say(f"{label:46}{t:>6.2f}{cells}")
    say()


# -- latency ---------------------------------------------------------------------------------------------


def latency(label: str, pipeline: RagPipeline, questions: list[dict[str, Any]], vectors: dict[str, list[float]]
            ) -> str:
    """/retrieve's work after the question is embedded: the store and keyword lookups, fusion, the records."""
    times = []
    for q in questions * max(1, 300 // len(questions)):
        start = time.perf_counter()
        pipeline.retrieve(q["question"], TOP_K, "hybrid", vectors[q["question"]])
        times.append((time.perf_counter() - start) * 1000)
    p50, p95 = statistics.median(times), statistics.quantiles(times, n=20)[18]
    return f"{label:44}{pipeline.store.count():>8}{p50:>9.1f}{p95:>9.1f}"


def padded_store(sources: list[Settings], target: int, url: str) -> Settings:
    """A store of `target` chunks: the real chunks (and embeddings) of the sets, then copies of them with
    their vectors jittered and their ids new, as a bigger corpus of the same kind would be."""
    settings = settings_for(f"pad{target}", url)
    store = ChromaStore.open(settings)
    if store.exists() and store.count() >= target:
        return settings
    records: list[Record] = []
    vectors: list[list[float]] = []
    for s in sources:
        source = ChromaStore.open(s)
        got, embedded = source.get_with_embeddings(source.collection.get()["ids"])
        records += got
        vectors += embedded
    rng = random.Random(5)
    base = len(records)
    for n in range(target - base):
        i = rng.randrange(base)
        records.append(Record(f"pad{n}-{records[i].id}", records[i].text, records[i].metadata))
        vectors.append([x + rng.gauss(0, 0.01) for x in vectors[i]])
    store.ensure(settings.embed_model, len(vectors[0]))
    store.upsert(records, vectors)
    tok = Tokenizer()
    bm25, ids = build_index(sorted((r.id, " ".join(tok.tokens(r.text))) for r in records))
    save_index(settings.keyword_path, bm25, ids, 1)
    return settings


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


def keyword_latency(questions: list[dict[str, Any]]) -> None:
    say("== Keyword search latency (synthetic mixed en/zh chunks, one process, 2 cores, top 20 per query)")
    say(f"{'chunks':>8} {'tokenise':>10} {'build':>8} {'save':>7} {'load':>7} {'index MB':>9} {'tokens MB':>10} "
        f"{'p50 ms':>7} {'p95 ms':>7}")
    rng = random.Random(11)
    queries = [q["question"] for q in questions] + [f"What does E{i:04d} mean?" for i in range(100)]
    for n in LATENCY_SIZES:
        corpus = synthetic_corpus(n, questions, rng)
        tok = Tokenizer()
        terms: dict[str, int] = {}
        t0 = time.perf_counter()
        # As ingest keeps them (rag.index.token_store): each chunk's tokens as int32 term ids.
        rows = [(cid, np.asarray([terms.setdefault(t, len(terms)) for t in tok.tokens(text)], dtype="<i4").tobytes())
                for cid, text in corpus]
        t1 = time.perf_counter()
        bm25, ids = build_index_from_term_ids(rows, terms)
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
        tokens_mb = sum(len(cid) + len(t) for cid, t in rows) / 1e6  # what tokens.sqlite3 holds
        say(f"{n:>8} {t1 - t0:>9.1f}s {t2 - t1:>7.1f}s {t3 - t2:>6.2f}s {t4 - t3:>6.2f}s {size:>9.1f} "
            f"{tokens_mb:>10.1f} {p50:>7.2f} {p95:>7.2f}")
    say()


# -- the examples over data/docs -----------------------------------------------------------------

DOCS_QUESTIONS = {
    "澳大利亚的首都是哪里？": False,  # not in data/docs
    "Ollama 公司的创始人是谁？": False,
    "What is the capital of Australia?": False,
    "OLLAMA_NUM_PARALLEL 是做什么用的？": True,
    "How do I back up the vector store?": True,
}


def data_docs(url: str) -> None:
    settings = settings_for("docs", url)
    summary = ingest_folder(ROOT / "data" / "docs", settings).summary
    if summary is None or summary.failed:
        raise SystemExit(f"ingesting data/docs failed: {summary}")
    pipeline = RagPipeline.open(settings)
    say("== data/docs: declined? (hybrid, top_k 4, as /ask)")
    for question, in_docs in DOCS_QUESTIONS.items():
        found = pipeline.retrieve(question, settings.top_k, "hybrid")
        kept = coverage.relevant(question, found, "hybrid", pipeline.keywords, settings)
        e = coverage.evidence(question, found, pipeline.keywords)
        say(f"  {'answered' if kept else 'declined':9} (in the documents: {'yes' if in_docs else 'no '}; "
            f"matched {e.matched:.2f}, agreed {e.agreed})  {question}")
    say()


def main() -> None:
    say("# Retrieval benchmark: bench/retrieval_bench.py (sets: bench/public_sets.py)")
    say(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
        f"embeddings: all-minilm on the bundled engine; load average at start {os.getloadavg()[0]:.1f}")
    say()
    timing = []
    evidence: dict[str, list[tuple[str, bool, float, bool, float]]] = {}
    with running_engine("real") as url:
        built = {}
        for name in SETS:
            data = load_set(name)
            settings = settings_for(name, url)
            index_set(name, data["passages"], settings)
            counts = defaultdict(int)
            for q in data["questions"]:
                counts[(q["kind"], q["part"])] += 1
            say(f"  questions: {dict(sorted(counts.items()))}")
            built[name] = (data, settings, question_vectors(name, data["questions"], RagPipeline.open(settings)))
        say()
        for name, (data, settings, vectors) in built.items():
            quality(name, data, settings, vectors)
            if name == "own":
                tokenizer_variants(ChromaStore.open(settings), data["questions"])
            abstention(name, data, settings, vectors)
            evidence[name] = evidence_rows(data, settings, vectors)
            answerable = [q for q in data["questions"] if q["kind"] == "answerable"]
            timing.append(latency(name, RagPipeline.open(settings), answerable, vectors))
        abstention_ceiling(evidence)
        data_docs(url)
        public = [s for name, (_, s, _) in built.items() if name != "own"]
        padded = padded_store(public, 10_000, url)
        questions = [q for name, (d, _, _) in built.items() if name != "own" for q in d["questions"]]
        vectors = {k: v for _, (_, _, vs) in built.items() for k, v in vs.items()}
        timing.append(latency("drcd + squad chunks, padded to 10k", RagPipeline.open(padded), questions, vectors))
    say("== /retrieve latency, hybrid, top_k 10, question embedding excluded (ms; 2 shared cores)")
    say(f"{'':44}{'chunks':>8}{'p50':>9}{'p95':>9}")
    for line in timing:
        say(line)
    say()
    keyword_latency(built["own"][0]["questions"])
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"written to {OUT.relative_to(ROOT)}")


def keyword_latency_only() -> None:
    say("# Keyword index latency: bench/retrieval_bench.py --keyword-latency")
    say(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
        f"load average at start {os.getloadavg()[0]:.1f}")
    say()
    keyword_latency(load_set("own")["questions"])
    out = OUT.with_name("keyword-latency.txt")
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"written to {out.relative_to(ROOT)}")


if __name__ == "__main__":
    if "--keyword-latency" in sys.argv[1:]:
        keyword_latency_only()
    else:
        main()
