"""Evidence: the sentences of the retrieved chunks that answer the question, with exact offsets.

A scorer over (question, sentence) pairs with what the service already has, no model call:
- term overlap: the question's content words found in the sentence, weighted by how rare each is among the
  candidate sentences (a BM25-like idf over this question's sentences), jieba words for Chinese;
- answer type: a question asking how many/多少/几 wants a number, which port a port, which variable/setting an
  identifier, how long/多久 a duration, when/几点 a time; a sentence holding that kind of thing scores higher;
- the chunk's rank among the sources, and a heading or a table line (no verb, no full stop) scores lower.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from ingest.chunking import split_sentences
from rag.answer.models import Evidence, Source
from rag.answer.support import stem
from rag.index.tokens import CJK, Tokenizer

MAX_EVIDENCE = 2
# Below this, the best sentence shares too little with the question to answer it: the documents do not
# cover the question. Kept low on purpose: on DRCD and SQuAD (bench/retrieval_bench.py's sets) 0.1 declines
# no answerable question that rag.answer.coverage keeps, while 0.3 doubled the false declines (0.05 -> 0.09-0.11)
# for few more true ones; on our own paraphrased questions it adds 0.02 false declines.
EVIDENCE_MIN = 0.1
SECOND_WITHIN = 0.75  # a second sentence is given when it scores at least this share of the first
SECOND_CLOSE = 0.95  # ... or this share, when the first already holds the kind of answer asked for

_TYPES: dict[str, tuple[re.Pattern[str], re.Pattern[str]]] = {
    # kind: (the question asks for it, the sentence holds it)
    "duration": (re.compile(r"how long|多久|多长时间|多长|几天|多少天|持续", re.I),
                 re.compile(r"\d+\s*(?:s|ms|seconds?|minutes?|hours?|days?|weeks?|months?|years?|秒|分钟|小时|天|周|个月|年)\b|"
                            r"\d+\s*(?:秒|分钟|小时|天|周|个月|年)", re.I)),
    "time": (re.compile(r"\bwhen\b|what time|at what time|how often|几点|什么时候|何时|多久一次|多长时间一次", re.I),
             re.compile(r"\b\d{1,2}:\d{2}\b|\d+\s*点|\b(?:daily|nightly|weekly|monthly|every|once|twice|per)\b|"
                        r"每天|每周|每月|每季度|凌晨|晚上", re.I)),
    "number": (re.compile(r"how (?:many|much|often|big|large)|多少|几|多大|数量|大小", re.I),
               re.compile(r"\d")),
    "port": (re.compile(r"\bport\b|端口", re.I), re.compile(r"\b\d{2,5}\b")),
    "identifier": (re.compile(r"\b(?:which|what)\s+(?:\w+\s+)?(?:setting|variable|environment|env|option|flag|"
                              r"command|code|model|file|directory|path|prefix|alias|name)|哪个|哪一个|什么变量|"
                              r"环境变量|哪条命令|什么命令|参数", re.I),
                   re.compile(r"[A-Z][A-Z0-9]*_[A-Z0-9_]+|--[a-z][\w-]+|`[^`]+`|/[\w./-]+|\b[a-z]+[-_:][\w.:-]+",
                              re.I)),
    "version": (re.compile(r"which version|what version|哪个版本|版本", re.I), re.compile(r"\bv?\d+\.\d+(?:\.\d+)?\b")),
}
# A heading, or a short line with no full stop and nothing an answer is made of (a digit, an identifier).
_HEADING = re.compile(r"^\s*#{1,6}\s|^[^.。!！?？;；:：\d_]{0,60}$")
# A question in the documents (an FAQ's "Q: ...?") restates the question; its answer is the next sentence.
_QUESTION = re.compile(r"[?？]\s*$|^\s*(?:Q|问)\s*[:：]")
_LEAD = re.compile(r"^\s*(?:[-*•+]\s+|\d{1,3}[.)]\s+|(?:A|答)\s*[:：]\s*)")
_CITE = re.compile(r"\[\d+\]")
_CJK = re.compile(rf"[{CJK}]")


@dataclass(frozen=True)
class _Candidate:
    source: Source
    rank: int
    start: int
    end: int
    text: str


class EvidenceFinder:
    """Picks the sentences that answer a question from the sources it was given."""

    def __init__(self, tokenizer: Tokenizer | None = None) -> None:
        self.tokenizer = tokenizer or Tokenizer()

    def find(self, question: str, sources: Sequence[Source], limit: int = MAX_EVIDENCE) -> list[Evidence]:
        candidates = [_Candidate(s, rank, a, b, s.text[a:b]) for rank, s in enumerate(sources)
                      for a, b in split_sentences(s.text)
                      if s.text[a:b].strip() and not _QUESTION.search(s.text[a:b])]  # a question answers nothing
        if not candidates:
            return []
        asked = list(dict.fromkeys(stem(w) for w in self.tokenizer.query(question)))
        words = [{stem(w) for w in self.tokenizer.tokens(c.text)} for c in candidates]
        idf = {w: math.log(1 + (len(candidates) + 1) / (1 + sum(w in ws for ws in words))) for w in asked}
        wanted = [kind for kind, (asks, _) in _TYPES.items() if asks.search(question)]
        total = sum(idf.values()) or 1.0
        scored = []
        for c, ws in zip(candidates, words, strict=True):
            overlap = sum(idf[w] for w in asked if w in ws) / total
            value = overlap + _type_bonus(c.text, wanted) - 0.04 * c.rank - (0.25 if _HEADING.search(c.text) else 0)
            scored.append((value, c))
        scored.sort(key=lambda pair: -pair[0])
        best, top = scored[0]
        if best < EVIDENCE_MIN:
            return []
        # A second sentence only when the first lacks what the question asks for, or is nearly as good.
        within = SECOND_WITHIN if wanted and not _type_bonus(top.text, wanted) else SECOND_CLOSE
        chosen = [pair for pair in scored[:limit] if pair[0] > 0 and pair[0] >= best * within]
        chosen = [p for i, p in enumerate(chosen) if not any(_same(p[1], q[1]) for q in chosen[:i])]
        return [
            Evidence(n=c.source.n, text=c.text, score=round(v, 3),
                     start=None if c.source.start is None else c.source.start + c.start,
                     end=None if c.source.start is None else c.source.start + c.end)
            for v, c in chosen
        ]


def gives_what_is_asked(question: str, answer: str) -> bool:
    """Whether an answer holds the kind of thing the question asks for (a number, a time, an identifier...);
    true when the question asks for none of them."""
    wanted = [kind for kind, (asks, _) in _TYPES.items() if asks.search(question)]
    return not wanted or bool(_type_bonus(_CITE.sub("", answer), wanted))  # a "[1]" is not a number


def is_factoid(question: str) -> bool:
    """A question asking for a number, a time, a port, a name or a version: its answer is short."""
    return any(asks.search(question) for asks, _ in _TYPES.values())


def _type_bonus(text: str, wanted: list[str]) -> float:
    return 0.35 if wanted and any(_TYPES[k][1].search(text) for k in wanted) else 0.0


def _same(a: _Candidate, b: _Candidate) -> bool:
    """The same sentence reached through two overlapping chunks."""
    return a.text.strip() == b.text.strip()


def evidence_answer(evidence: Sequence[Evidence], lang: str) -> str:
    """The evidence as an answer: each sentence, as the source says it, with its [n]."""
    sep = "" if lang == "zh" else " "
    return sep.join(f"{_one_line(e.text)} [{e.n}]" for e in evidence)


def _one_line(text: str) -> str:
    """A sentence on one line: a PDF's line breaks go, as a space between words and as nothing in Chinese."""
    text = re.sub(rf"(?<=[{CJK}])\s*\n\s*(?=[{CJK}])", "", text)
    return _LEAD.sub("", _CITE.sub("", re.sub(r"\s*\n\s*", " ", text))).strip()
