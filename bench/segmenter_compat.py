"""Chinese keyword tokens: rjieba (what rag.index.tokens runs) against the Python jieba it replaced.

Run: pip install -e '.[bench]'; python bench/segmenter_compat.py   (writes bench/results/segmenter.txt)

Every Chinese run (rag.index.tokens' definition) of the DRCD passages (bench/public_sets.py) and of the
Markdown under data/ is cut by both, in search and precise mode, with and without HMM; the words must be
the same for the keyword index to mean the same thing it meant with jieba. Also times both.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import public_sets  # noqa: E402

from rag.index.tokens import _PIECE, Segmenter  # noqa: E402

OUT = ROOT / "bench" / "results" / "segmenter.txt"


def main() -> None:
    import jieba

    texts = [p["text"] for p in public_sets.load("drcd")["passages"]]
    texts += [p.read_text(encoding="utf-8", errors="replace") for p in sorted((ROOT / "data").rglob("*.md"))]
    runs = [m.group(1) for t in texts for m in _PIECE.finditer(t) if m.group(1)]
    python = jieba.Tokenizer()
    python.initialize()
    rust = Segmenter().load()
    lines = [
        "# Chinese segmentation: bench/segmenter_compat.py",
        f"# {platform.machine()}, Python {platform.python_version()}, load average at start {os.getloadavg()[0]:.1f}",
        f"{len(texts)} texts (DRCD passages, data/**/*.md), {len(runs)} Chinese runs, {sum(map(len, runs))} characters",
        "",
    ]
    same = True
    for mode in ("search", "precise"):
        for hmm in (False, True):
            started = time.perf_counter()
            if mode == "search":
                a = [list(python.cut_for_search(r, HMM=hmm)) for r in runs]
            else:
                a = [list(python.cut(r, HMM=hmm)) for r in runs]
            py_s = time.perf_counter() - started
            started = time.perf_counter()
            b = [rust.cut_for_search(r, hmm) if mode == "search" else rust.cut(r, hmm) for r in runs]
            rs_s = time.perf_counter() - started
            differ = [r for r, x, y in zip(runs, a, b, strict=True) if x != y]
            same &= not differ
            lines.append(f"{mode:<8} HMM {'on ' if hmm else 'off'}  runs cut differently: {len(differ):>5}   "
                         f"jieba {py_s:.2f} s   rjieba {rs_s:.2f} s   ({py_s / rs_s:.1f}x)"
                         + (f"   first: {differ[0][:40]}" if differ else ""))
    lines += ["", "identical in every mode" if same else "NOT identical: bump TOKENIZER_VERSION"]
    OUT.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
