"""How many chunks should the bundled model see? `rag eval run` over data/eval/qa.jsonl at several top_k.

Run: python bench/eval_topk.py [--k 1 2 4 5]
     (starts the real engine on a free port, ingests data/docs into a scratch store with `rag ingest`, runs
      `rag eval run --top-k K` for each K as a user would, and writes bench/results/eval_topk.txt; the
      per-run reports stay in eval-runs/topk-K/)

hit@k is measured over the sources returned, so with top_k = 2 the hit@5 column is really hit@2.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ["HF_HUB_OFFLINE"] = os.environ["TRANSFORMERS_OFFLINE"] = "1"

from tests.support.servers import running_engine  # noqa: E402

OUT = ROOT / "bench" / "results" / "eval_topk.txt"
RAG = [sys.executable, "-m", "rag"]


def rag(env: dict[str, str], *args: str) -> None:
    subprocess.run([*RAG, *args], cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)


def ci(got: dict[str, Any]) -> str:
    """'mean [low, high]' of a summary metric."""
    if got["mean"] is None:
        return "-"
    return f"{got['mean']:.3f} [{got['ci95'][0]:.3f}, {got['ci95'][1]:.3f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, nargs="+", default=[1, 2, 4, 5])
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="eval-topk-") as tmp, running_engine("real") as url:
        env = {**os.environ, "OLLAMA_HOST": url, "RAG_STORAGE_DIR": str(Path(tmp) / "storage"),
               "RAG_LOG_LEVEL": "WARNING"}
        rag(env, "ingest", "data/docs")
        for k in args.k:
            out = ROOT / "eval-runs" / f"topk-{k}"
            print(f"top_k {k} ...", file=sys.stderr, flush=True)
            rag(env, "eval", "run", "data/eval/qa.jsonl", "--top-k", str(k), "--out", str(out))
            rows.append((k, json.loads((out / "summary.json").read_text(encoding="utf-8"))))
    lines = [
        f"rag eval run data/eval/qa.jsonl at several top_k, {datetime.now():%Y-%m-%d %H:%M}",
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
        "chat and judge smollm2:135m, embeddings all-minilm, hybrid retrieval; 29 questions",
        "means with 95% bootstrap intervals; latency in seconds per question",
        "",
        f"{'top_k':>5}  {'token F1':<22}{'faithfulness':<22}{'hit@5':>6}{'mrr':>7}"
        f"{'scored':>8}{'failed':>8}{'abst.':>7}{'gen p50':>9}{'gen p95':>9}",
    ]
    for k, s in rows:
        m, c, lat = s["metrics"], s["counts"], s["latency_ms"]["generate"]
        lines.append(f"{k:>5}  {ci(m['token_f1']):<22}{ci(m['faithfulness']):<22}{m['hit@5']['mean']:>6.3f}"
                     f"{m['mrr']['mean']:>7.3f}{c['scored']:>8}{c['judge_failed']:>8}{c['abstained']:>7}"
                     f"{lat['p50'] / 1000:>9.1f}{lat['p95'] / 1000:>9.1f}")
    text = "\n".join(lines) + "\n"
    print(text)
    OUT.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
