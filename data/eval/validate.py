"""Sanity checks for the evaluation sets in data/eval. Run: python3 data/eval/validate.py"""
import json, re, sys
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
errors = []

def load(p):
    return [json.loads(l) for l in open(HERE / p, encoding="utf-8") if l.strip()]

def err(msg):
    errors.append(msg)

def zh_sentences(t):
    return len(re.findall(r"[。！？]", t))

def en_sentences(t):
    return len(re.findall(r"[.!?](?:\s|$)", t))

# ---------------- retrieval ----------------
passages = load("retrieval/passages.jsonl")
questions = load("retrieval/questions.jsonl")
pids = [p["id"] for p in passages]
qids = [q["id"] for q in questions]
if len(set(pids)) != len(pids): err("duplicate passage ids")
if len(set(qids)) != len(qids): err("duplicate question ids")
pmap = {p["id"]: p for p in passages}
for p in passages:
    if p["lang"] == "en":
        n = len(p["text"].split())
        if not 40 <= n <= 120: err(f"{p['id']}: {n} words")
        s = en_sentences(p["text"])
    else:
        n = len(p["text"])
        if not 60 <= n <= 200: err(f"{p['id']}: {n} chars")
        s = zh_sentences(p["text"])
    if not 2 <= s <= 5: err(f"{p['id']}: {s} sentences")

IDENT = re.compile(r"[A-Za-z0-9_./:-]*[A-Za-z0-9]")
def identifiers(text):
    out = []
    for tok in IDENT.findall(text):
        if len(tok) >= 3 and re.search(r"[0-9_/:.-]", tok) and not tok.isdigit():
            out.append(tok)
    return out

for q in questions:
    if q["passage_id"] not in pmap:
        err(f"{q['id']}: unknown passage {q['passage_id']}"); continue
    if q["kind"] not in ("paraphrase", "identifier", "keyword"): err(f"{q['id']}: bad kind")
    if q["cross_lang"] != (q["lang"] != pmap[q["passage_id"]]["lang"]): err(f"{q['id']}: cross_lang flag wrong")
    if q["lang"] == "zh" and not q["question"].endswith("？"): err(f"{q['id']}: zh question should end with ？")
    if q["kind"] == "identifier":
        ok = False
        for tok in identifiers(q["question"]):
            hits = [p["id"] for p in passages if tok in p["text"]]
            if hits == [q["passage_id"]]: ok = True
        if not ok: err(f"{q['id']}: no identifier unique to its passage ({identifiers(q['question'])})")

# ---------------- faithfulness ----------------
faith = load("faithfulness.jsonl")
fids = [f["id"] for f in faith]
if len(set(fids)) != len(fids): err("duplicate faithfulness ids")
for f in faith:
    if f["label"] not in ("supported", "unsupported"): err(f"{f['id']}: bad label")
    if (f["label"] == "supported") != (f["kind"] == "supported"): err(f"{f['id']}: label/kind mismatch")
    s = zh_sentences(f["context"]) if f["lang"] == "zh" else en_sentences(f["context"])
    if not 2 <= s <= 5: err(f"{f['id']}: context has {s} sentences")
    a = f["answer"]
    s = zh_sentences(a) if f["lang"] == "zh" else en_sentences(a)
    if not 1 <= s <= 3: err(f"{f['id']}: answer has {s} sentences")
    if f["lang"] == "zh":
        if not a.endswith(("。", "！", "？")): err(f"{f['id']}: zh answer must end with Chinese punctuation")
        if re.search(r"[,?!;]|\.(?!\d)", re.sub(r"\d\.\d", "", a)): err(f"{f['id']}: ASCII punctuation in zh answer")
pairs = {}
for f in faith:
    pairs.setdefault((f["question"], f["context"]), []).append(f)
ratios = []
for key, group in pairs.items():
    labels = sorted(g["label"] for g in group)
    if labels != ["supported", "unsupported"]: err(f"pair {group[0]['id']}: labels {labels}"); continue
    a, b = (len(g["answer"]) for g in group)
    r = min(a, b) / max(a, b); ratios.append(r)
    if r < 0.8: err(f"pair {group[0]['id']}: length ratio {r:.2f}")

# ---------------- report ----------------
print(f"passages: {len(passages)}  by lang: {dict(Counter(p['lang'] for p in passages))}")
print(f"questions: {len(questions)}  by lang: {dict(Counter(q['lang'] for q in questions))}")
print(f"  by kind: {dict(Counter(q['kind'] for q in questions))}")
print(f"  by lang x kind: {dict(sorted(Counter((q['lang'], q['kind']) for q in questions).items()))}")
print(f"  cross-language: {sum(q['cross_lang'] for q in questions)}")
print(f"  passages with >=1 question: {len({q['passage_id'] for q in questions})}")
print(f"faithfulness: {len(faith)}  by lang: {dict(Counter(f['lang'] for f in faith))}")
print(f"  by label: {dict(Counter(f['label'] for f in faith))}")
print(f"  by lang x label: {dict(sorted(Counter((f['lang'], f['label']) for f in faith).items()))}")
print(f"  by kind: {dict(Counter(f['kind'] for f in faith))}")
print(f"  pairs: {len(ratios)}  min length ratio: {min(ratios):.2f}  mean: {sum(ratios)/len(ratios):.2f}")
if errors:
    print(f"\n{len(errors)} problem(s):"); print("\n".join("  " + e for e in errors)); sys.exit(1)
print("\nall checks passed")
