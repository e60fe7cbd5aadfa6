"""What the portable llama.cpp build costs: prompt and generation speed of SmolLM2-135M, in-process.

Run: python bench/llama_build_bench.py [OTHER_PYTHON ...]
  Measures the llama-cpp-python installed in this interpreter (the portable build of scripts/build-llama.sh)
  and, for each OTHER_PYTHON given, the one installed there (e.g. a venv with a -march=native build:
  CMAKE_ARGS=-DGGML_NATIVE=ON pip install --no-cache-dir --no-binary llama-cpp-python llama-cpp-python==0.3.36).
  Writes bench/results/llama_build.txt.

Each build runs in its own process on the same GGUF file, the builds taking turns (portable, other, portable,
other, ...) so that a passing load on the machine hits both alike; best of ROUNDS turns of each of
(a) evaluating a 512-token prompt (batched matrix multiplies: where AVX-512/AMX would matter) and
(b) generating 128 tokens one at a time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REPEATS = 3  # inside one process
ROUNDS = 4  # processes per build, interleaved
PROMPT_TOKENS, GENERATED = 512, 128


def measure(model: str) -> dict[str, object]:
    """Runs inside the interpreter under test."""
    import llama_cpp
    from llama_cpp import Llama

    threads = os.cpu_count() or 1
    llm = Llama(model, n_ctx=2048, n_threads=threads, n_threads_batch=threads, n_batch=512, verbose=False)
    words = ("the nightly snapshot of the storage folder runs at half past two and keeps seven copies " * 80).split()
    prompt = llm.tokenize(" ".join(words).encode())[:PROMPT_TOKENS]
    best_prompt = best_gen = float("inf")
    for _ in range(REPEATS):
        llm.reset()
        start = time.perf_counter()
        llm.eval(prompt)
        best_prompt = min(best_prompt, time.perf_counter() - start)
        start = time.perf_counter()
        for count, _token in enumerate(llm.generate(prompt[:32], temp=0.0, reset=True), start=1):
            if count == GENERATED:
                break
        best_gen = min(best_gen, time.perf_counter() - start)
    flags = llama_cpp.llama_print_system_info().decode()
    return {
        "prompt_tps": PROMPT_TOKENS / best_prompt,
        "gen_tps": GENERATED / best_gen,
        "features": " ".join(f for f in flags.split("|") if "= 1" in f).replace(" = 1", "").split(),
    }


def run(python: str, model: str) -> dict[str, object]:
    code = f"import sys; sys.path.insert(0, {str(ROOT)!r}); import json; from bench.llama_build_bench import measure; "
    code += f"print(json.dumps(measure({model!r})))"
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    sys.path.insert(0, str(ROOT))
    from rag.engine.catalog import SMOLLM2, artifact_path

    model = str(artifact_path(SMOLLM2))
    pythons = [sys.executable, *sys.argv[1:]]
    lines = [
        f"llama.cpp build benchmark, {time.strftime('%Y-%m-%d %H:%M')}; SmolLM2-135M Q4_1, {os.cpu_count()} threads, "
        f"best of {ROUNDS} interleaved rounds x {REPEATS} runs",
        f"prompt: {PROMPT_TOKENS} tokens evaluated in one batch; generation: {GENERATED} tokens, greedy",
        "",
        f"load average at start: {' '.join(Path('/proc/loadavg').read_text().split()[:3])}",
    ]
    rounds = [[run(python, model) for python in pythons] for _ in range(ROUNDS)]
    results = []
    for i, python in enumerate(pythons):
        mine = [r[i] for r in rounds]
        best = {key: max(float(m[key]) for m in mine) for key in ("prompt_tps", "gen_tps")}  # type: ignore[arg-type]
        results.append((python, {**mine[0], **best}))
    base = results[0][1]
    for python, r in results:
        label = "this interpreter (portable build)" if python == sys.executable else python
        lines.append(
            f"{label}\n  prompt {r['prompt_tps']:8.1f} tokens/s   generation {r['gen_tps']:7.1f} tokens/s   "
            f"(portable / this: prompt {float(base['prompt_tps']) / float(r['prompt_tps']):.2f}, "  # type: ignore[arg-type]
            f"generation {float(base['gen_tps']) / float(r['gen_tps']):.2f})\n"  # type: ignore[arg-type]
            f"  CPU features llama.cpp uses: {' '.join(r['features'])}"  # type: ignore[arg-type]
        )
    lines.append(f"load average at end: {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")
    report = "\n".join(lines) + "\n"
    print(report, end="")
    (ROOT / "bench" / "results" / "llama_build.txt").write_text(report, encoding="utf-8")


if __name__ == "__main__":
    main()
