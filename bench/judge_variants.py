"""Is the bundled judge's weakness the model's or the decomposition's? Simpler verdict prompts, scored alike.

Run: python bench/judge_variants.py [--model NAME] [--url URL]
     (without --url it starts the real engine on a free port; writes bench/results/judge_variants.txt)

`rag eval validate` scores data/eval/faithfulness.jsonl with the shipped judge (the judge decomposes each
sentence into statements, then gives verdicts). Here the decomposition is skipped: each rule-split sentence
of the answer (rag.eval.judge.answer_sentences) is one statement, and each gets its own schema-constrained
call at temperature 0 and seed 42, with three prompt wordings. Score = supported sentences / sentences, compared with
the labels by AUROC and balanced accuracy (supported when score = 1), like `rag eval validate`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ["HF_HUB_OFFLINE"] = os.environ["TRANSFORMERS_OFFLINE"] = "1"

import ollama  # noqa: E402

from rag.eval import metrics  # noqa: E402
from rag.eval.judge import answer_sentences  # noqa: E402
from tests.support.servers import running_engine  # noqa: E402

CASES = ROOT / "data" / "eval" / "faithfulness.jsonl"
OUT = ROOT / "bench" / "results" / "judge_variants.txt"

# name: (system prompt, user prompt template, verdict enum with the "supported" value first)
VARIANTS: dict[str, tuple[str, str, tuple[str, str]]] = {
    "checker": (
        "You check whether a statement is supported by a context. Answer yes only if the context says it.",
        "Context:\n{context}\n\nStatement: {statement}\n\nIs the statement supported by the context?",
        ("yes", "no"),
    ),
    "plain": ("Answer with yes or no.", '{context}\n\nAccording to the text above, is this true: "{statement}"?',
              ("yes", "no")),
    "claim": (
        "You are a careful fact checker.",
        "Text: {context}\n\nClaim: {statement}\n\nDoes the text contain this claim with the same numbers and names?",
        ("true", "false"),
    ),
}


@contextmanager
def server(url: str | None) -> Iterator[str]:
    if url:
        yield url
    else:
        with running_engine("real") as started:
            yield started


def supported(client: ollama.Client, model: str, variant: str, context: str, statement: str) -> bool:
    system, user, enum = VARIANTS[variant]
    schema = {"type": "object", "properties": {"verdict": {"type": "string", "enum": list(enum)}},
              "required": ["verdict"]}
    reply = client.chat(model=model, format=schema, options={"temperature": 0, "seed": 42, "num_ctx": 2048,
                                                             "num_predict": 32},
                        messages=[{"role": "system", "content": system},
                                  {"role": "user", "content": user.format(context=context, statement=statement)}])
    return bool(json.loads(reply.message.content or "{}").get("verdict") == enum[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2:135m")
    parser.add_argument("--url", default=None, help="an Ollama (or engine) already running")
    args = parser.parse_args()
    cases = [json.loads(line) for line in CASES.read_text(encoding="utf-8").splitlines() if line.strip()]
    positive = [c["label"] == "supported" for c in cases]
    lines = [f"judge variants, {datetime.now():%Y-%m-%d %H:%M}; model {args.model}; {len(cases)} labelled cases "
             f"from {CASES.relative_to(ROOT)}",
             f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
             "one call per rule-split sentence, temperature 0, seed 42; score = supported sentences / sentences", ""]
    with server(args.url) as url:
        client = ollama.Client(host=url, timeout=300)
        results: dict[str, dict[str, Any]] = {}
        overlap = [metrics.word_overlap(c["answer"], c["context"]) for c in cases]
        results["word-overlap baseline"] = {"scores": overlap, "seconds": 0.0}
        for variant in VARIANTS:
            start = time.perf_counter()
            scores = []
            for case in cases:
                said = [supported(client, args.model, variant, case["context"], s)
                        for s in answer_sentences(case["answer"])]
                scores.append(sum(said) / len(said))
            results[variant] = {"scores": scores, "seconds": time.perf_counter() - start}
            print(f"{variant}: done in {results[variant]['seconds']:.0f} s", file=sys.stderr)
    lines.append(f"{'variant':<24}{'AUROC':>8}{'bal.acc':>9}{'mean supported':>16}{'mean unsupported':>18}{'s':>6}")
    for name, got in results.items():
        scores = got["scores"]
        pos = [s for s, p in zip(scores, positive, strict=True) if p]
        neg = [s for s, p in zip(scores, positive, strict=True) if not p]
        lines.append(f"{name:<24}{metrics.auroc(scores, positive):>8.3f}"
                     f"{metrics.balanced_accuracy(scores, positive, 1.0):>9.3f}"
                     f"{sum(pos) / len(pos):>16.3f}{sum(neg) / len(neg):>18.3f}{got['seconds']:>6.0f}")
    lines += ["", "balanced accuracy: supported when score >= 1.0, as in `rag eval validate`"]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.url is None and args.model == "smollm2:135m":
        OUT.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
