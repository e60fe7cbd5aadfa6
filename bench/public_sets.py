"""Public labelled retrieval sets for bench/retrieval_bench.py: DRCD (Chinese) and SQuAD 2.0 (English).

Neither set is committed (DRCD is CC BY-SA 3.0, SQuAD CC BY-SA 4.0: we keep to their own copies). The script
fetches them into bench/.cache/ (gitignored) with `git clone --depth 1`, or reads a copy already on disk:

    git clone --depth 1 https://github.com/DRCKnowledgeTeam/DRCD bench/.cache/src/DRCD
    git clone --depth 1 https://github.com/SebastianHurubaru/cs224n_squad_2 bench/.cache/src/cs224n_squad_2

or point RAG_BENCH_DRCD / RAG_BENCH_SQUAD at a clone (a work tree or a bare git directory).

What a set holds (all choices are seeded, so every run builds the same set):
- passages: DRCD dev's 1,000 paragraphs (converted to Simplified Chinese with zhconv, as a mainland user's
  documents would be); SQuAD 2.0 dev's paragraphs (the CS224N split: its "dev" half with answers, its "test"
  half as more passages), minus three held-out articles.
- answerable questions: one per sampled paragraph, labelled with that paragraph.
- near unanswerable questions ("near"): from articles whose paragraphs are not indexed (DRCD test articles
  whose title is not in dev; SQuAD's held-out articles): same kind of text, same kind of question.
- far unanswerable questions ("far"): hand-written, bench/unanswerable_far.json.
- every question is in part "tune" (a third of the articles, the only part any parameter was chosen on) or
  "report" (the rest). The far questions alternate between the parts.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "bench" / ".cache"
FAR = ROOT / "bench" / "unanswerable_far.json"
SOURCES = {
    "drcd": ("RAG_BENCH_DRCD", "https://github.com/DRCKnowledgeTeam/DRCD", "DRCD"),
    "squad": ("RAG_BENCH_SQUAD", "https://github.com/SebastianHurubaru/cs224n_squad_2", "cs224n_squad_2"),
}
ANSWERABLE = 300
NEAR = 60
SQUAD_HELD_OUT = 3  # articles of SQuAD's dev half whose paragraphs are not indexed


def _git_dir(name: str) -> Path:
    env, url, folder = SOURCES[name]
    where = Path(os.environ.get(env) or CACHE / "src" / folder)
    if not where.exists():
        where.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "clone", "--depth", "1", url, str(where)], check=True)
    return where / ".git" if (where / ".git").is_dir() else where


def read_json(name: str, path: str) -> Any:
    """A file of the fetched repository, from its git objects (an LFS pointer or a missing blob fails loudly)."""
    text = subprocess.run(
        ["git", f"--git-dir={_git_dir(name)}", "show", f"HEAD:{path}"], check=True, capture_output=True, text=True,
    ).stdout
    if text.startswith("version https://git-lfs"):
        raise SystemExit(f"{name}:{path} is a Git LFS pointer, not the data")
    return json.loads(text)


def part_of(title: str) -> str:
    """A third of the articles tune, the rest report; by a hash of the title, so it never depends on order."""
    return "tune" if int(hashlib.sha1(title.encode()).hexdigest(), 16) % 3 == 0 else "report"


def _sample(articles: list[dict[str, Any]], n: int, rng: random.Random, prefix: str) -> list[dict[str, Any]]:
    """One answerable question from each of n sampled paragraphs."""
    pool = [(a["title"], i, p) for a in articles for i, p in enumerate(a["paragraphs"])
            if any(not q.get("is_impossible") and q.get("answers") for q in p["qas"])]
    out = []
    for title, i, p in rng.sample(pool, min(n, len(pool))):
        q = rng.choice([q for q in p["qas"] if not q.get("is_impossible") and q.get("answers")])
        out.append({"question": q["question"], "passage_id": f"{prefix}-{title}-{i}", "title": title})
    return out


def _passages(articles: list[dict[str, Any]], prefix: str) -> list[dict[str, Any]]:
    return [{"id": f"{prefix}-{a['title']}-{i}", "title": a["title"], "text": p["context"]}
            for a in articles for i, p in enumerate(a["paragraphs"])]


def drcd() -> dict[str, Any]:
    import zhconv  # bench-only (the `bench` extra): DRCD is Traditional, most users' documents Simplified

    def simple(text: str) -> str:
        return str(zhconv.convert(text, "zh-cn"))

    rng = random.Random(13)
    dev = read_json("drcd", "DRCD_dev.json")["data"]
    test = read_json("drcd", "DRCD_test.json")["data"]
    indexed = {a["title"] for a in dev}
    passages = _passages(dev, "drcd")
    answerable = _sample(dev, ANSWERABLE, rng, "drcd")
    unseen = [a for a in test if a["title"] not in indexed]
    near = [{"question": q["question"], "passage_id": None, "title": t}
            for t, q in ((a["title"], rng.choice(rng.choice(a["paragraphs"])["qas"])) for a in unseen)]
    near = rng.sample(near, min(NEAR, len(near)))
    for p in passages:
        p["title"], p["text"] = simple(p["title"]), simple(p["text"])
    for q in (*answerable, *near):
        q["question"] = simple(q["question"])
    return _assemble("zh", passages, answerable, near)


def squad() -> dict[str, Any]:
    rng = random.Random(17)
    dev = read_json("squad", "data/dev-v2.0.json")["data"]
    test = read_json("squad", "data/test-v2.0.json")["data"]  # no answers published: passages only
    held = rng.sample(dev, SQUAD_HELD_OUT)
    kept = [a for a in dev if a not in held]
    passages = _passages(kept, "squad") + _passages(test, "squad")
    answerable = _sample(kept, ANSWERABLE, rng, "squad")
    near = [dict(q, passage_id=None) for q in _sample(held, NEAR, rng, "held")]
    return _assemble("en", passages, answerable, near)


def _assemble(lang: str, passages: list[dict[str, Any]], answerable: list[dict[str, Any]],
              near: list[dict[str, Any]]) -> dict[str, Any]:
    far = json.loads(FAR.read_text(encoding="utf-8"))[lang]
    questions = [
        *({**q, "kind": "answerable", "part": part_of(q["title"])} for q in answerable),
        *({**q, "kind": "near", "part": part_of(q["title"])} for q in near),
        *({"question": text, "passage_id": None, "title": "", "kind": "far", "part": ("tune", "report")[i % 2]}
          for i, text in enumerate(far)),
    ]
    for n, q in enumerate(questions):
        q.update(id=f"{lang}{n:04d}", lang=lang)
    return {"passages": passages, "questions": questions}


BUILDERS = {"drcd": drcd, "squad": squad}


def load(name: str) -> dict[str, Any]:
    """The set, built once and cached as JSON under bench/.cache/sets/."""
    path = CACHE / "sets" / f"{name}.json"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(BUILDERS[name](), ensure_ascii=False), encoding="utf-8")
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data
