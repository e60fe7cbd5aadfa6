"""Ingest at scale: a folder of about 100k chunks ingested once, then again with 1% of its files changed.

Run: python bench/scale_bench.py [--files 5700] (writes bench/results/scale.md; the folder and the store go
to bench/.cache/scale/, gitignored, and are rebuilt from scratch on every run). With `--engine real` the
bundled all-minilm embeds the same folder instead (about 15 minutes on 2 cores; bench/results/scale-real.md):
whether the store's growth shows through the model.

The text is public: sentences of DRCD dev (Chinese, converted to Simplified) and SQuAD 2.0 dev (English),
from bench/public_sets.py, drawn at random (seeded) into files of about CHUNKS_PER_FILE chunks each, half
the files in each language. Nothing of it is committed.

The engine runs its **deterministic backend** (hashed words and trigrams, not a language model): this run
measures what is ours (reading, chunking, bookkeeping, Chroma and keyword-index writes, the journal, the
manifest) as the store grows, not the embedding model, whose cost per token bench/ingest_bench.py and
bench/engine_bench.py measure. With the bundled all-minilm the model time would add about
tokens / (model tokens/s) on top, which the table below states for the model tokens/s measured there.

Reported: chunks/s in every tenth of the run (flat = no slowdown as the store grows), the ingest process's
peak RSS, the storage size, the 1%-changed re-ingest, and `/retrieve` p50/p95 (hybrid, top_k 10, question
embedding excluded: the vectors are computed before timing) at 10k chunks (the first tenth of the files,
ingested alone first) and at the full size.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ["HF_HUB_OFFLINE"] = os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

import public_sets  # noqa: E402

from tests.support.servers import running_engine  # noqa: E402

WORK = public_sets.CACHE / "scale"
OUT = ROOT / "bench" / "results" / "scale.md"
OUT_REAL = ROOT / "bench" / "results" / "scale-real.md"
CHUNKS_PER_FILE = 20
SENTENCES_PER_FILE = {"zh": 70, "en": 60}  # about CHUNKS_PER_FILE chunks of RAG_CHUNK_SIZE (200) tokens each
QUERIES = 300
INGEST_RESULTS = ROOT / "bench" / "results" / "ingest.md"


def model_chunks_per_s() -> dict[str, float]:
    """all-minilm's embed-only chunks/s per language, as bench/ingest_bench.py last measured it (its table's
    `embed-only` row under `### zh` and `### en`)."""
    rates, lang = {}, ""
    for line in INGEST_RESULTS.read_text(encoding="utf-8").splitlines():
        if line.startswith("### "):
            lang = line[4:].split(":")[0]
        elif line.startswith("| embed-only") and lang in ("zh", "en"):
            rates[lang] = float(line.split("|")[5])
    return rates


def sentences() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for lang, name, pattern in (("zh", "drcd", r"(?<=[。！？])"), ("en", "squad", r"(?<=[.!?])\s+")):
        texts = [p["text"] for p in public_sets.load(name)["passages"]]
        out[lang] = [s.strip() for t in texts for s in re.split(pattern, t) if len(s.strip()) > 8]
    return out


def write_folder(folder: Path, files: int, pool: dict[str, list[str]], rng: random.Random) -> list[Path]:
    folder.mkdir(parents=True)
    paths = []
    for i in range(files):
        lang = ("zh", "en")[i % 2]
        body = (" " if lang == "en" else "").join(rng.choices(pool[lang], k=SENTENCES_PER_FILE[lang]))
        paths.append(folder / f"{i // 500:03d}" / f"doc-{i:06d}.md")
        paths[-1].parent.mkdir(exist_ok=True)
        paths[-1].write_text(f"# Document {i}\n\n{body}\n", encoding="utf-8")
    return paths


def ingest(folder: Path, env: dict[str, str], label: str) -> dict[str, Any]:
    """`rag ingest` in a child (as a user runs it), its progress sampled from the child's own log lines."""
    script = ROOT / "bench" / "_scale_child.py"
    started = time.perf_counter()
    done = subprocess.run([sys.executable, str(script), str(folder)], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{label}: ingest failed\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["wall"] = wall
    return result


def retrieve_latency(storage: Path, url: str, questions: list[str]) -> tuple[int, float, float]:
    from rag.answer.pipeline import RagPipeline
    from rag.config import Settings

    settings = Settings(_env_file=None, ollama_host=url, storage_dir=storage)  # type: ignore[call-arg]
    pipeline = RagPipeline.open(settings)
    vectors = [pipeline.retriever.embedder.embed_query(q) for q in questions]
    for q, v in zip(questions[:20], vectors[:20], strict=True):  # warm up: page the index in
        pipeline.retrieve(q, 10, "hybrid", v)
    times = []
    for q, v in zip(questions, vectors, strict=True):
        t = time.perf_counter()
        pipeline.retrieve(q, 10, "hybrid", v)
        times.append((time.perf_counter() - t) * 1000)
    times.sort()
    count = pipeline.retriever.store.count()
    return count, statistics.median(times), times[int(0.95 * (len(times) - 1))]


def chroma_alone(where: Path, n: int, batch: int = 256) -> list[float]:
    """Seconds per tenth of n random unit vectors (384 dimensions, as all-minilm's) upserted `batch` at a time
    into an empty collection made as ours is (embedded client, cosine space), with no metadata and no text:
    how Chroma's own insert cost grows with its size, apart from anything of ours."""
    import numpy as np

    from rag.config import Settings
    from rag.index.chroma import chroma_client

    settings = Settings(_env_file=None, storage_dir=where)  # type: ignore[call-arg]
    collection = chroma_client(settings).create_collection(
        "vectors-alone", metadata={"hnsw:space": "cosine"}, embedding_function=None)
    rng, seconds, tenth = np.random.default_rng(7), [], n // 10
    for start in range(0, n - n % tenth, tenth):
        began = time.perf_counter()
        for i in range(start, start + tenth, batch):
            vectors = rng.standard_normal((min(batch, start + tenth - i), 384)).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            collection.upsert(ids=[f"v{j}" for j in range(i, i + len(vectors))], embeddings=vectors)
        seconds.append(time.perf_counter() - began)
    return seconds


def tenth_table(rows: list[tuple[str, list[float], str]]) -> list[str]:
    """A Markdown table with a column per tenth of the run: (label, one value per tenth, format) per row."""
    n = len(rows[0][1])
    lines = ["| tenth | " + " | ".join(str(i + 1) for i in range(n)) + " |", "|---|" + "---|" * n]
    return lines + [f"| {label} | " + " | ".join(format(x, fmt) for x in values) + " |" for label, values, fmt in rows]


def growth_lines(full: dict[str, Any]) -> list[str]:
    """Chunks/s per tenth of the whole-folder run, and where each tenth's wall time went."""
    lines = ["throughput over the whole-folder run, by tenth of its files (chunks/s in that stretch):", "",
             *tenth_table([("chunks/s", full["tenths"], ".0f")])]
    first, last = full["tenths"][0], full["tenths"][-1]
    lines += ["", f"last tenth / first tenth: **{last / first:.2f}** (1.00 = no slowdown as the store grows)"]
    stages = full.get("stages") or {}
    if not stages:
        return lines
    lines += ["", "where each tenth's wall time went (seconds in the ingest's calls that ended in that tenth; "
                  "the writes run beside the embed calls, so the parts need not add up to the wall):", ""]
    vectors = [store - texts for store, texts in zip(stages["store"], stages["texts"], strict=True)]
    rest = [w - v - t - k for w, v, t, k in zip(stages["wall"], vectors, stages["texts"], stages["keywords"],
                                                 strict=True)]
    lines += tenth_table([("wall", stages["wall"], ".2f"), ("Chroma vector upsert", vectors, ".2f"),
                          ("chunk texts (SQLite)", stages["texts"], ".2f"),
                          ("keyword tokens (SQLite)", stages["keywords"], ".2f"), ("the rest", rest, ".2f")])
    lines += ["", f"last tenth / first tenth: Chroma vector upsert {vectors[-1] / max(vectors[0], 1e-9):.2f}x, "
                  f"chunk texts {stages['texts'][-1] / max(stages['texts'][0], 1e-9):.2f}x, keyword tokens "
                  f"{stages['keywords'][-1] / max(stages['keywords'][0], 1e-9):.2f}x, the rest "
                  f"{rest[-1] / max(rest[0], 1e-9):.2f}x"]
    return lines


def size_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=5700)  # about 17.5 chunks per file
    parser.add_argument("--engine", choices=["deterministic", "real"], default="deterministic",
                        help="real: the bundled all-minilm (ONNX) embeds; the whole folder and the 1%%-changed "
                             f"run only, written to {OUT_REAL.relative_to(ROOT)}")
    args = parser.parse_args()
    if args.engine == "real":
        real_model(args.files)
        return
    lines: list[str] = []

    def say(text: str = "") -> None:
        print(text, flush=True)
        lines.append(text)

    shutil.rmtree(WORK, ignore_errors=True)
    rng = random.Random(7)
    pool = sentences()
    folder, storage = WORK / "docs", WORK / "storage"
    paths = write_folder(folder, args.files, pool, rng)
    tenth = WORK / "docs-tenth"
    for path in paths[: len(paths) // 10]:  # the first tenth of the files: about 10k chunks
        (tenth / path.relative_to(folder)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, tenth / path.relative_to(folder))
    questions = [s[:120] for s in rng.sample(pool["zh"], QUERIES // 2) + rng.sample(pool["en"], QUERIES // 2)]
    say("# Scale benchmark: bench/scale_bench.py")
    say()
    say(f"{time.strftime('%Y-%m-%d %H:%M')}; {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; engine: **deterministic backend** (not a model: this measures our "
        f"pipeline, not embedding time); load average at start {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    say(f"folder: {args.files} Markdown files (half DRCD-sentence Chinese, half SQuAD-sentence English), "
        f"{size_mb(folder):.0f} MB")
    say()
    with running_engine("deterministic") as url:
        env = {**os.environ, "OLLAMA_HOST": url, "RAG_STORAGE_DIR": str(WORK / "storage-tenth"),
               "PYTHONPATH": str(ROOT)}
        small = ingest(tenth, env, "the first tenth")
        at_10k = retrieve_latency(WORK / "storage-tenth", url, questions)
        env["RAG_STORAGE_DIR"] = str(storage)
        full = ingest(folder, env, "the whole folder")
        at_full = retrieve_latency(storage, url, questions)
        changed = rng.sample(paths, len(paths) // 100)
        for path in changed:
            path.write_text(path.read_text(encoding="utf-8") + f"\n\nEdited {rng.random()}.\n", encoding="utf-8")
        again = ingest(folder, env, "1% changed")
        noop = ingest(folder, env, "nothing changed")
    say("| run | files | chunks embedded | wall s | chunks/s | peak RSS MB |")
    say("|---|---|---|---|---|---|")
    for label, r in (("first tenth (fresh store)", small), ("whole folder (fresh store)", full),
                     ("1% of files changed", again), ("nothing changed", noop)):
        say(f"| {label} | {r['files']} | {r['embedded']} | {r['wall']:.1f} | "
            f"{r['embedded'] / r['wall']:.0f} | {r['peak_rss_mb']:.0f} |")
    say()
    say(f"storage after the whole folder: {size_mb(storage):.0f} MB for {full['chunks']} chunks "
        f"({size_mb(storage) * 1024 / max(full['chunks'], 1):.1f} KB per chunk)")
    say()
    for line in growth_lines(full):
        say(line)
    alone = chroma_alone(WORK / "chroma-alone", full["chunks"])
    say()
    say(f"Chroma alone (`chroma_alone()`: {full['chunks']} random 384-dimension vectors upserted 256 at a time into "
        "an empty collection made as ours is, no metadata, no text), seconds per tenth:")
    say()
    for line in tenth_table([("s", alone, ".2f")]):
        say(line)
    say()
    say(f"last tenth / first tenth: {alone[-1] / alone[0]:.2f}x the time (throughput {alone[0] / alone[-1]:.2f})")
    rates = model_chunks_per_s()
    model_s = sum(full["embedded"] / 2 / rate for rate in rates.values())
    say(f"for scale: the bundled all-minilm embeds about {rates['zh']:.0f} (zh) and "
        f"{rates['en']:.0f} (en) chunks/s on 2 cores (bench/results/ingest.md), so its "
        f"{full['embedded']} chunks would take the model alone about {model_s / 3600:.1f} h; everything else of "
        f"ours took {full['wall'] / 60:.1f} min here ({full['wall'] / model_s:.2f} of the model's time)")
    say()
    say("`/retrieve` (hybrid, top_k 10, question embedding excluded), "
        f"{QUERIES} queries (sentences of the corpus, cut to 120 characters):")
    say()
    say("| chunks | p50 ms | p95 ms |")
    say("|---|---|---|")
    for count, p50, p95 in (at_10k, at_full):
        say(f"| {count} | {p50:.1f} | {p95:.1f} |")
    say()
    say(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    OUT.write_text("\n".join(lines) + "\n", encoding="utf-8")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    print(f"written to {OUT.relative_to(ROOT)}; peak RSS of this process {peak} MB")


def real_model(files: int) -> None:
    """The same folder embedded by the bundled all-minilm: whether the store's growth shows through the model."""
    shutil.rmtree(WORK, ignore_errors=True)
    rng = random.Random(7)
    folder, storage = WORK / "docs", WORK / "storage"
    paths = write_folder(folder, files, sentences(), rng)
    lines = ["# Scale benchmark with the model: bench/scale_bench.py --engine real", "",
             f"{time.strftime('%Y-%m-%d %H:%M')}; {platform.machine()}, {os.cpu_count()} cores, Python "
             f"{platform.python_version()}; engine: the bundled all-minilm on ONNX Runtime int8 "
             f"(`rag engine`, RAG_ENGINE_EMBED_RUNTIME=onnx); load average at start "
             f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}",
             f"folder: the scale folder of bench/results/scale.md, {files} Markdown files, {size_mb(folder):.0f} MB",
             ""]
    print("\n".join(lines), flush=True)
    with running_engine("real", RAG_ENGINE_EMBED_RUNTIME="onnx") as url:
        env = {**os.environ, "OLLAMA_HOST": url, "RAG_STORAGE_DIR": str(storage), "PYTHONPATH": str(ROOT)}
        full = ingest(folder, env, "the whole folder")
        for path in rng.sample(paths, len(paths) // 100):
            path.write_text(path.read_text(encoding="utf-8") + f"\n\nEdited {rng.random()}.\n", encoding="utf-8")
        again = ingest(folder, env, "1% changed")
    lines += ["| run | files | chunks embedded | wall s | chunks/s | peak RSS MB |", "|---|---|---|---|---|---|"]
    for label, r in (("whole folder (fresh store)", full), ("1% of files changed", again)):
        lines.append(f"| {label} | {r['files']} | {r['embedded']} | {r['wall']:.1f} | "
                     f"{r['embedded'] / r['wall']:.0f} | {r['peak_rss_mb']:.0f} |")
    lines += ["", f"storage after the whole folder: {size_mb(storage):.0f} MB for {full['chunks']} chunks", "",
              *growth_lines(full), ""]
    OUT_REAL.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
