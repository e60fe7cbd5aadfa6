"""The sentence gate: generated text is let through a sentence at a time, so each can be checked before a
reader sees it, and generation is stopped as soon as it goes wrong.

It stops the model on a repeated sentence, a repeated run of words (a small model loops until num_predict
runs out), and a copied source header (`[2] (file.md)`, `Sources:`, `资料：`, a Markdown heading). In `auto`
mode it also stops at the first sentence no source supports; that sentence is held back, never shown.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from ingest.chunking import split_sentences
from rag.answer.models import Claim, Source
from rag.answer.support import SupportChecker, claim_texts

REPEAT_WORDS = 8  # the same 8 words (or 16 Chinese characters) twice: a loop
_HEADER = re.compile(r"^\s*(?:\[\d+\]\s*\(|(?:Sources|资料|Question|问题)\s*[:：]|#{1,6}\s)", re.M)
_WORDS = re.compile(r"[A-Za-z0-9_]+|[^\sA-Za-z0-9_]")


@dataclass
class SentenceGate:
    """Feed it the model's text; it returns what may be shown, and says when to stop the model."""

    checker: SupportChecker
    sources: Sequence[Source]
    check_support: bool
    text: str = ""  # everything the model said
    shown: str = ""  # what was let through
    claims: list[Claim] = field(default_factory=list)
    stopped: str | None = None  # why generation was stopped: repeat, header, unsupported
    _done: int = 0  # characters of `text` already decided on
    _seen: set[str] = field(default_factory=set)

    def feed(self, delta: str) -> str:
        """Take a piece of model text; return the text now let through (whole sentences only)."""
        self.text += delta
        if self.stopped:
            return ""
        spans = split_sentences(self.text[self._done:])
        complete = spans[:-1]  # the last sentence may still grow
        return self._decide(complete)

    def finish(self) -> str:
        """The model is done: decide on the last sentence too."""
        if self.stopped:
            return ""
        return self._decide(split_sentences(self.text[self._done:]))

    def _decide(self, spans: list[tuple[int, int]]) -> str:
        out = ""
        base = self._done
        for start, end in spans:
            sentence = self.text[base + start:base + end]
            why = self._reason_to_stop(sentence)
            if why:
                self.stopped = why
                break
            gap = self.text[self._done:base + start]
            out += ("" if not self.shown and not out else gap) + sentence
            self._done = base + end
        self.shown += out
        return out

    def _reason_to_stop(self, sentence: str) -> str | None:
        if _HEADER.search(sentence):
            return "header"
        key = re.sub(r"\s+|\[\d+\]", "", sentence).lower()
        if key in self._seen or _loops(self.shown + " " + sentence):
            return "repeat"
        self._seen.add(key)
        if self.check_support and claim_texts(sentence):
            claim = self.checker.claim(sentence.strip(), self.sources)
            self.claims.append(claim)
            if not claim.supported:
                return "unsupported"
        return None


def _loops(text: str) -> bool:
    """A run of REPEAT_WORDS words (2x as many CJK characters) that occurs twice."""
    words = _WORDS.findall(text)
    n = REPEAT_WORDS if sum(w.isascii() for w in words) > len(words) / 2 else REPEAT_WORDS * 2
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    return len(grams) != len(set(grams))
