"""Keyword tokens for mixed Chinese/English text: the one tokeniser used at index and at query time."""

from __future__ import annotations

import re
import threading
from typing import Any, Literal

# Bump when tokens change: an index built by another version is refused until it is rebuilt.
TOKENIZER_VERSION = 1
MAX_QUERY_TOKENS = 64  # a pasted page as a "question" is cut here; BM25 gains nothing from more terms
MAX_QUERY_CHARS = 8000
_TERM_CACHE = 200_000  # distinct Latin terms remembered per Tokenizer (a few MB at most)

# Chinese characters (CJK unified ideographs, extension A, compatibility): one definition for every module.
CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_ALNUM = "0-9A-Za-z\u00c0-\u024f"
_JOIN = "_.:/+#-"
# A CJK run, or a term: letters and digits, joined by single `_ . : / + # -` between them, so that
# OLLAMA_KEEP_ALIVE, llama3.1:8b, /api/embed, PN-4471-B and 0.0.3 stay whole (a trailing full stop
# or a leading slash is not part of the term).
_PIECE = re.compile(rf"([{CJK}]+)|([{_ALNUM}]+(?:[{_JOIN}][{_ALNUM}]+)*)")
_PARTS = re.compile(rf"[{_ALNUM}]+")

# Small on purpose: words that carry no topic. Larger lists (bm25s' Chinese one has 841 entries)
# drop words such as 使用 or 允许 that our documents are about.
_STOP_EN = (
    "a an and are as at be but by for if in into is it its no not of on or such that the their then there "
    "these they this to was will with what which who whom whose when where why how do does did can could "
    "should would may might must shall i me my we our us you your he she him her his them been being have "
    "has had am were so than too very any some all each from up down out about over after before"
)
_STOP_ZH = (
    "的 了 是 在 和 与 及 或 也 都 就 要 会 吗 呢 吧 啊 呀 么 什么 怎么 怎样 如何 哪 哪些 哪个 哪里 多少 几 为什么 "
    "谁 我 我们 你 你们 他 她 它 他们 这 那 这个 那个 这些 那些 一个 请问 有 被 把 让 给 对 从 到 吗 之 其 "
    "而 并 但 还 又 再 则 即 应该 需要 可以 能 能否 是否 一般"
)
STOP_EN, STOP_ZH = frozenset(_STOP_EN.split()), frozenset(_STOP_ZH.split())

CjkMode = Literal["search", "precise"]


_SEGMENTER_LOCK = threading.Lock()
_segmenter: Any = None


class Segmenter:
    """jieba's segmentation through rjieba (jieba-rs, in Rust): the same dictionary and the same words as the
    Python jieba in every mode (checked on 42k Chinese runs, with and without HMM), segmenting 7x faster.

    Its dictionary is built into the library and never changed by us, so one instance serves the process."""

    def load(self) -> Any:
        """The ready segmenter; call it at start-up so the first Chinese text does not pay its set-up (~50 ms)."""
        global _segmenter
        with _SEGMENTER_LOCK:
            if _segmenter is None:
                import rjieba

                _segmenter = rjieba.Jieba()
            return _segmenter


class Tokenizer:
    """Lower-cased word tokens for Latin text, jieba words for Chinese; `calls` counts texts tokenised.

    `cjk_mode="search"` adds the shorter words inside long ones (jieba's search mode), so a question
    that says 显存 still meets a document that says GPU显存占用; `parts` adds the pieces of a joined
    term (ollama, keep, alive) after the whole term, so prose that names them loosely still matches.
    """

    def __init__(
        self, cjk_mode: CjkMode = "search", parts: bool = False, hmm: bool = False, segmenter: Segmenter | None = None
    ) -> None:
        self.segmenter = segmenter or Segmenter()
        self.cjk_mode = cjk_mode
        self.parts = parts
        # HMM guesses unknown words from context, so a query and a document could cut the same
        # phrase differently; the dictionary alone is context-free and deterministic.
        self.hmm = hmm
        self.calls = 0
        self._terms: dict[str, list[str]] = {}  # a Latin term as written -> its tokens: words repeat

    def tokens(self, text: str) -> list[str]:
        """Every token of `text`, in order, repeats kept (BM25 counts them)."""
        self.calls += 1
        out: list[str] = []
        known = self._terms
        for cjk, term in _PIECE.findall(text):
            if cjk:
                out += self._cjk(cjk)
            elif term in known:
                out += known[term]
            else:
                if len(known) >= _TERM_CACHE:
                    known.clear()
                out += known.setdefault(term, self._term(term.lower()))
        return out

    def query(self, text: str) -> list[str]:
        """Tokens of a question: de-duplicated, in order, at most MAX_QUERY_TOKENS of them."""
        unique = dict.fromkeys(self.tokens(text[:MAX_QUERY_CHARS]))
        return list(unique)[:MAX_QUERY_TOKENS]

    def _term(self, term: str) -> list[str]:
        if term in STOP_EN:
            return []
        parts = _PARTS.findall(term) if self.parts else []
        return [term, *(p for p in parts if p not in STOP_EN)] if len(parts) > 1 else [term]

    def _cjk(self, run: str) -> list[str]:
        seg = self.segmenter.load()
        words = seg.cut_for_search(run, self.hmm) if self.cjk_mode == "search" else seg.cut(run, self.hmm)
        return [w for w in words if w not in STOP_ZH]
