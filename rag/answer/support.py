"""The support check: is each sentence of an answer backed by a span of a source, and which span.

Deterministic signals only, the same in Chinese and English, whatever model wrote the answer:
- coverage: the share of the claim's content words (jieba words for Chinese, with their characters as a
  fallback for words cut differently) found in the span;
- numbers: every number the claim states must be in the span (a changed number is the commonest error);
- identifiers: every environment variable, path, port, flag, version or quoted term it names must be there;
- negation: a claim that negates what the span affirms (or the reverse) is a contradiction.
The score is coverage scaled down by each failed hard signal; `SUPPORTED` is the threshold, chosen on
data/eval/faithfulness.jsonl (`bench/support_bench.py` reports AUROC there and on a public set).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from ingest.chunking import split_sentences
from rag.answer.models import Claim, Source
from rag.index.tokens import CJK, Tokenizer

SUPPORTED = 0.6  # a claim scoring this or more is supported (chosen on data/eval/faithfulness.jsonl)
WINDOW = 3  # a claim may draw on up to this many adjacent sentences of one source

_CITE = re.compile(r"\s*\[(\d+)\]")
_LIST_MARK = re.compile(r"^\s*(?:[-*•+]|\d{1,3}[.)])\s+")  # "1. Installation": the 1 is not a number stated
_NUMBER = re.compile(r"\d+(?:[.:,]\d+)*")
_IDENT = re.compile(
    r"`([^`\n]{2,60})`"  # `quoted`
    r"|\b([A-Z][A-Z0-9]*_[A-Z0-9_]+)\b"  # ENV_VARS
    r"|(--[a-z][a-z0-9-]+)"  # --flags
    r"|((?:[\w.-]+)?/[\w./-]+)"  # paths and routes: storage/, /api/embed
    r"|\b([a-z0-9]+(?:[-_.:][a-z0-9]+)+)\b",  # names: all-minilm, smollm2:135m, rag-oncall, v0.0.3
)
_NEG_EN = re.compile(r"\b(?:not|no|never|cannot|can't|don't|doesn't|isn't|aren't|won't|without|nothing|none)\b|n't\b",
                     re.I)
_NEG_ZH = re.compile(r"不|没有|没|无|非|未|别|勿|禁止")
_CJK_RUN = re.compile(rf"[{CJK}]")
_EN_NUMBERS = {w: str(i) for i, w in enumerate((
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
    "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty"))}
_EN_WORD = re.compile(r"\b(" + "|".join(_EN_NUMBERS) + r")\b", re.I)
_SUFFIX = re.compile(r"(?:ies|es|s|ed|ing|ly)$")
_ZH_DIGITS = {"零": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9}


@dataclass(frozen=True)
class Signals:
    words: frozenset[str]
    chars: frozenset[str]  # CJK characters, for Chinese words the segmenter cut differently
    numbers: frozenset[str]
    idents: frozenset[str]
    negated: bool


class SupportChecker:
    """Scores claims against sources; one per pipeline (it keeps the tokeniser warm)."""

    def __init__(self, tokenizer: Tokenizer | None = None, threshold: float = SUPPORTED) -> None:
        self.tokenizer = tokenizer or Tokenizer()
        self.threshold = threshold

    def signals(self, text: str) -> Signals:
        return _signals(self.tokenizer, text)

    def score(self, claim: str, span: str) -> float:
        return score(self.signals(claim), self.signals(span))

    def claims(self, answer: str, sources: Sequence[Source]) -> list[Claim]:
        """Each sentence of `answer` with its best supporting span among `sources` (the cited ones first)."""
        return [self.claim(text, sources) for text in claim_texts(answer)]

    def claim(self, text: str, sources: Sequence[Source]) -> Claim:
        cited = [int(n) for n in _CITE.findall(text)]
        bare = _LIST_MARK.sub("", _CITE.sub("", text).strip())
        # A lead-in ("The main endpoints are:") states nothing yet: it cannot be supported on its own.
        mine = self.signals("" if bare.endswith((":", "：")) else bare)
        best: tuple[float, Source | None, int, int] = (0.0, None, 0, 0)
        rank = (0.0, False, 0)
        for source in sources:
            for start, end in windows(source.text):
                found = score(mine, self.signals(source.text[start:end]))
                # On a tie, a cited source (the citation is then right), then the shortest span.
                if (candidate := (found, source.n in cited, start - end)) > rank:
                    best, rank = (found, source, start, end), candidate
        value, found_in, start, end = best
        supported = value >= self.threshold and found_in is not None
        offset = (found_in.start or 0) if found_in is not None else 0
        return Claim(
            text=text, supported=supported, score=round(value, 3), cited=cited,
            source_n=found_in.n if supported and found_in else None,
            start=offset + start if supported else None, end=offset + end if supported else None,
            citation_ok=None if not cited else bool(supported and found_in and found_in.n in cited),
        )


_BARE = re.compile(
    r"^(?:yes|no|yeah|nope|sure|ok|okay|是|是的|对|不|不是|不对|可以|不可以|不能|能)[\s.,!?;:，。！？；：]*$", re.I
)


def support_score(checker: SupportChecker, answer: str, context: str) -> float:
    """An answer's support by one context, 0..1: its least supported sentence's score (0 when it says nothing)."""
    source = Source(n=1, source="context", page=None, chunk_id="context", score=1.0, text=context, start=0)
    return min((c.score for c in checker.claims(answer, [source])), default=0.0)


def claim_texts(answer: str) -> list[str]:
    """The sentences of an answer that state something: not a bare "[1]", a line of punctuation, or a lone
    "Yes."/"不可以。" (which says nothing a span could back without the sentence after it)."""
    out = []
    for start, end in split_sentences(answer):
        text = answer[start:end].strip()
        bare = _CITE.sub("", text).strip()
        if re.search(rf"[{CJK}A-Za-z0-9]", bare) and not _BARE.match(bare):
            out.append(text)
    return out


def windows(text: str) -> list[tuple[int, int]]:
    """Spans of 1..WINDOW adjacent sentences of a source text."""
    spans = split_sentences(text)
    return [(spans[i][0], spans[j][1]) for i in range(len(spans)) for j in range(i, min(i + WINDOW, len(spans)))]


@lru_cache(maxsize=4096)
def _signals(tokenizer: Tokenizer, text: str) -> Signals:
    words = frozenset(stem(w) for w in tokenizer.tokens(text))
    flat = _EN_WORD.sub(lambda m: _EN_NUMBERS[m.group().lower()], _zh_numbers(text))
    return Signals(
        words=words,
        chars=frozenset(c for c in _CJK_RUN.findall(text) if c not in "的了是在和与及或也都就要会"),
        numbers=frozenset(_NUMBER.findall(flat)),
        idents=frozenset(i for i in (next(g for g in m.groups() if g).lower().strip("./")
                                     for m in _IDENT.finditer(text)) if not _NUMBER.fullmatch(i)),
        negated=bool(_NEG_EN.search(text) or _NEG_ZH.search(text)),
    )


def score(claim: Signals, span: Signals) -> float:
    """How well `span` backs `claim`, 0..1: content coverage, scaled down by failed hard signals."""
    if len(claim.words) < 2 and len(claim.chars) < 3 and not claim.numbers and not claim.idents:
        return 0.0  # "The answer is:" states nothing a span could back
    cover = len(claim.words & span.words) / len(claim.words) if claim.words else 0.0
    if claim.chars:  # Chinese: the better of word and character coverage
        cover = max(cover, len(claim.chars & span.chars) / len(claim.chars) * 0.9)
    value = cover
    if claim.numbers - span.numbers:
        value *= 0.25
    missing = {i for i in claim.idents - span.idents if not any(i in s or s in i for s in span.idents)}
    if missing:
        value *= 0.4
    if claim.negated != span.negated:
        value *= 0.5
    return value


def stem(word: str) -> str:
    """English words without their commonest endings (ships/shipped/shipping), so a paraphrase still meets."""
    return _SUFFIX.sub("", word) if len(word) > 4 and word.isascii() else word


def _zh_numbers(text: str) -> str:
    """Chinese digits (一 to 九, 两) written as numbers, so 两点 meets 2 点; larger forms are left alone."""
    return re.sub("[零一二两三四五六七八九](?=[点个天小分秒周月年次])",
                  lambda m: str(_ZH_DIGITS[m.group()]), text)
