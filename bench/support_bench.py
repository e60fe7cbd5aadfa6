"""The support check (rag/answer/support.py) on labelled faithfulness sets: AUROC, with the word-overlap
baseline and the bundled LLM judge beside it.

Sets:
- project: data/eval/faithfulness.jsonl, 64 cases, en+zh. The check's threshold and weights were chosen here.
- BEGIN (google/BEGIN-dataset, dev and WoW test splits): knowledge-grounded dialogue responses labelled
  "fully attributable" or not by annotators; not used to choose anything.
- QAGS (W4ngatang/qags, CNN/DM and XSum): model-written summary sentences, each labelled "supported by the
  article" by 3 annotators (majority); abstractive, so a lexical check is at its weakest; not used either.

Data: not committed. Fetch the repositories (the tool library's `fetch github:google/BEGIN-dataset` and
`fetch github:W4ngatang/qags`, or `git clone`) and pass their git directories:

    python bench/support_bench.py --begin /path/to/BEGIN-dataset/.git --qags /path/to/qags/.git [--judge-sample 40]

The judge (the bundled SmolLM2 through a running engine at OLLAMA_HOST) runs on a sample of each set, as it
takes seconds per case; --judge-sample 0 leaves it out.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rag.answer.support import SUPPORTED, SupportChecker, support_score  # noqa: E402
from rag.eval import metrics  # noqa: E402

Case = dict[str, Any]  # {"set", "lang", "context", "answer", "question", "supported"}


def git_file(git_dir: Path, path: str) -> str:
    return subprocess.run(["git", f"--git-dir={git_dir}", "show", f"HEAD:{path}"], check=True,
                          capture_output=True, text=True).stdout


def project_cases() -> list[Case]:
    rows = [json.loads(line) for line in (ROOT / "data/eval/faithfulness.jsonl").read_text().splitlines()]
    return [{"set": f"project ({r['lang']})", "lang": r["lang"], "context": r["context"], "answer": r["answer"],
             "question": r["question"], "supported": r["label"] == "supported"} for r in rows]


def begin_cases(git_dir: Path) -> list[Case]:
    csv.field_size_limit(10**8)
    out = []
    for name, path in [("BEGIN CMU-DoG dev", "cmu-dog/begin_dev_cmu.tsv"), ("BEGIN TopicalChat dev",
                       "topicalchat/begin_dev_tc.tsv"), ("BEGIN WoW dev", "wow/begin_dev_wow.tsv"),
                       ("BEGIN WoW test", "wow/begin_test_wow.tsv")]:
        for r in csv.DictReader(io.StringIO(git_file(git_dir, path)), delimiter="\t"):
            label = r["begin_label"].lower()
            if label == "generic":  # says nothing to attribute; BEGIN's own metrics leave it out too
                continue
            out.append({"set": name, "lang": "en", "context": r["knowledge"], "answer": r["response"],
                        "question": r["message"], "supported": label == "fully attributable"})
    return out


def qags_cases(git_dir: Path) -> list[Case]:
    out = []
    for name, path in [("QAGS CNN/DM", "data/mturk_cnndm.jsonl"), ("QAGS XSum", "data/mturk_xsum.jsonl")]:
        for line in git_file(git_dir, path).splitlines():
            article = json.loads(line)
            for s in article["summary_sentences"]:
                yes = sum(r["response"] == "yes" for r in s["responses"])
                out.append({"set": name, "lang": "en", "context": article["article"], "answer": s["sentence"],
                            "question": "Summarise the article.", "supported": yes >= 2})
    return out


def judge_scores(cases: list[Case], sample: int, sets: list[str]) -> dict[str, float | None]:
    """The bundled judge's AUROC per set on a fixed random sample (seed 7), balanced between the labels."""
    from rag.config import Settings
    from rag.eval.judge import Judge

    judge = Judge(Settings())  # type: ignore[call-arg]
    out: dict[str, float | None] = {}
    for name in dict.fromkeys(c["set"] for c in cases):
        if sets and not any(name.startswith(prefix) for prefix in sets):
            continue
        rng = random.Random(7)
        pos = [c for c in cases if c["set"] == name and c["supported"]]
        neg = [c for c in cases if c["set"] == name and not c["supported"]]
        picked = rng.sample(pos, min(len(pos), sample // 2)) + rng.sample(neg, min(len(neg), sample // 2))
        scores, labels = [], []
        for c in picked:
            got = judge.faithfulness(c["question"], c["answer"], [c["context"][:6000]])
            if got.score is not None:
                scores.append(got.score)
                labels.append(c["supported"])
        out[name] = metrics.auroc(scores, labels)
        print(f"  judge {name}: {len(scores)}/{len(picked)} scored", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--begin", type=Path, help="git directory of google/BEGIN-dataset")
    parser.add_argument("--qags", type=Path, help="git directory of W4ngatang/qags")
    parser.add_argument("--judge-sample", type=int, default=40, help="cases per set for the LLM judge (0: none)")
    parser.add_argument("--judge-sets", nargs="*", default=[], help="judge only the sets whose names start so")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/support.md")
    args = parser.parse_args()

    cases = project_cases()
    if args.begin:
        cases += begin_cases(args.begin)
    if args.qags:
        cases += qags_cases(args.qags)
    checker = SupportChecker()
    started = time.perf_counter()
    for c in cases:
        c["support"] = support_score(checker, c["answer"], c["context"])
        c["baseline"] = metrics.word_overlap(c["answer"], c["context"])
    seconds = time.perf_counter() - started
    judged = judge_scores(cases, args.judge_sample, args.judge_sets) if args.judge_sample else {}

    lines = [
        "# The support check on labelled faithfulness sets", "",
        f"`python bench/support_bench.py --begin ... --qags ... --judge-sample {args.judge_sample}"
        f"{' --judge-sets ' + ' '.join(repr(x) for x in args.judge_sets) if args.judge_sets else ''}`; "
        f"{len(cases)} cases checked in {seconds:.1f} s ({seconds / len(cases) * 1000:.1f} ms a case) on "
        f"{os.cpu_count()} cores. Threshold {SUPPORTED} (chosen on the project set only).", "",
        "| set | cases | supported | support check AUROC | balanced acc. at threshold | word-overlap AUROC | "
        f"judge AUROC (sample of {args.judge_sample}) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in dict.fromkeys(c["set"] for c in cases):
        group = [c for c in cases if c["set"] == name]
        labels = [c["supported"] for c in group]
        support = [c["support"] for c in group]
        lines.append(
            f"| {name} | {len(group)} | {sum(labels)} | {_f(metrics.auroc(support, labels))} | "
            f"{_f(metrics.balanced_accuracy(support, labels, SUPPORTED))} | "
            f"{_f(metrics.auroc([c['baseline'] for c in group], labels))} | {_f(judged.get(name))} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.write_text(text)


def _f(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


if __name__ == "__main__":
    main()
