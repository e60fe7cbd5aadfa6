"""Chunking: cut extracted page text into sentence-aligned chunks with exact offsets and stable ids."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import NamedTuple

from ingest.loaders import LoadedDocument

# An estimate of all-MiniLM's BERT WordPiece count (uncased, 30k vocabulary), meant to err high.
# BERT gives each CJK character and each punctuation mark a token of its own and cuts words into
# vocabulary pieces; we count a run of letters as ceil(len/4) tokens, a run of digits as ceil(len/3),
# and any other visible character as 1. Measured against the real tokenizer: English prose +20-35%,
# READMEs and licences +15-25%, Chinese exact, jargon-dense text (github, pypi, urllib3) down to -17%.
# The [CLS]/[SEP] pair the model adds is not counted. Counts add up over pieces cut at spaces or
# punctuation and never shrink when text is cut, so a sum of piece counts bounds the whole.
# Counted with three passes of C regex code and no Python loop: a run of L letters is ceil(L/4) matches of
# one to four letters, a run of digits ceil(L/3) matches of one to three, and the other visible characters
# are what is left when letters, digits and spaces are taken out.
_LETTERS_BY_4 = re.compile(r"[A-Za-z\u00C0-\u024F]{1,4}")
_DIGITS_BY_3 = re.compile(r"[0-9]{1,3}")
_NOT_OTHER = re.compile(r"[\sA-Za-z\u00C0-\u024F0-9]+")

_SENTENCE_END = re.compile(
    r"(?P<cjk>[。！？；…]+[”’」』）》\"']*)"  # Chinese ends need no space after them
    r"|(?P<latin>[.!?]+[\"'”’)\]]*)(?=\s|$)"  # English ends need a space or the end after them
    r"|\n[ \t]*\n"  # a blank line ends a paragraph
    r"|\n(?=[ \t]*(?:[-*+•]|\d{1,3}[.)]|#{1,6})[ \t])"  # a list item or a heading starts
    r"|^[ \t]*#{1,6}[ \t][^\n]*$",  # a Markdown heading is a sentence of its own
    re.MULTILINE,
)
_ABBREVIATIONS = frozenset({"e.g", "i.e", "cf", "vs", "al", "mr", "mrs", "ms", "dr", "prof", "fig", "approx"})
_WORD_BEFORE = re.compile(r"[\w.]*$")  # the word (with its dots) that a full stop ends
_CLAUSE_END = re.compile(r"[，,、：:；;]+")
_SPACE = re.compile(r"\s+")
_FALLBACK_CUTS = (_CLAUSE_END, _SPACE)  # where a sentence too long for one chunk is cut, in order


class _Unit(NamedTuple):
    start: int
    end: int
    tokens: int


@dataclass(frozen=True)
class Chunk:
    """A citable piece of one page; `text == page_text[start:end]` always holds."""

    source: str
    page: int | None
    position: int  # 0-based order of the chunk within its file, across pages
    start: int
    end: int
    text: str
    content_hash: str  # sha256 hex of text
    id: str  # see chunk_id; pieces from split_chunk derive theirs from the parent's
    tokens: int
    part: str = ""  # "" for a whole chunk; "0", "1", then "1.0"... for pieces made by split_chunk


def count_tokens(text: str) -> int:
    """Estimated embedding-model tokens in `text`, erring high (see the note on _LETTERS_BY_4): runs of
    letters and of digits are counted, and every other visible character is 1."""
    return len(_LETTERS_BY_4.findall(text)) + len(_DIGITS_BY_3.findall(text)) + len(_NOT_OTHER.sub("", text))


def chunk_id(source: str, position: int, content_hash: str) -> str:
    """Stable id: the same file, position and content always give the same id."""
    return _seeded_id(f"{source}\x00{position}", content_hash)


def _seeded_id(seed: str, content_hash: str) -> str:
    return _sha256(f"{seed}\x00{content_hash}")[:32]


def split_sentences(text: str) -> list[tuple[int, int]]:
    """(start, end) of each sentence, list item or paragraph; only whitespace between them is left out."""
    cuts = [match.end() for match in _SENTENCE_END.finditer(text) if not _after_abbreviation(text, match)]
    return _spans(text, 0, len(text), cuts)


def _after_abbreviation(text: str, match: re.Match[str]) -> bool:
    """True for the period of "e.g.", "Dr.", an initial like "J." or a list number like "1."."""
    end = match.group()
    if match.group("latin") is None or not end.startswith(".") or end.startswith(".."):
        return False
    at = match.start()
    before = _WORD_BEFORE.search(text, max(0, at - 12), at).group()  # type: ignore[union-attr]  # can be empty
    if before.lower() in _ABBREVIATIONS or (len(before) == 1 and before.isupper()):
        return True
    return text[text.rfind("\n", 0, at) + 1 : at].strip().isdigit()


def chunk_document(doc: LoadedDocument, chunk_size: int, overlap: int) -> list[Chunk]:
    """Whole sentences packed up to `chunk_size` tokens per chunk, page by page; each chunk after the
    first on a page repeats the previous chunk's trailing sentences, up to `overlap` tokens."""
    if chunk_size < 1 or not 0 <= overlap < chunk_size:
        raise ValueError(
            f"need chunk_size >= 1 and 0 <= overlap < chunk_size, got {chunk_size} and {overlap}"
        )
    chunks: list[Chunk] = []
    for page in doc.pages:
        for start, end in _pack(_units(page.text, chunk_size), chunk_size, overlap):
            position = len(chunks)
            seed = f"{doc.source}\x00{position}"  # so the id is chunk_id(source, position, content_hash)
            chunks.append(_make(page.text, start, end, doc.source, page.number, position, seed))
    return chunks


def _units(text: str, limit: int) -> list[_Unit]:
    return [unit for start, end in split_sentences(text) for unit in _fit(text, start, end, limit)]


def _fit(text: str, start: int, end: int, limit: int, level: int = 0) -> list[_Unit]:
    """The span as one unit if it fits, else cut at clause marks, then spaces, then anywhere."""
    tokens = count_tokens(text[start:end])
    if tokens <= limit:
        return [_Unit(start, end, tokens)]
    if level == len(_FALLBACK_CUTS):
        return _hard_split(text, start, end, limit)
    cuts = [match.end() for match in _FALLBACK_CUTS[level].finditer(text, start, end)]
    return [unit for s, e in _spans(text, start, end, cuts) for unit in _fit(text, s, e, limit, level + 1)]


def _hard_split(text: str, start: int, end: int, limit: int) -> list[_Unit]:
    """`limit` characters at a time: no character counts for more than one token."""
    spans = _spans(text, start, end, list(range(start + limit, end, limit)))
    return [_Unit(s, e, count_tokens(text[s:e])) for s, e in spans]


def _pack(units: list[_Unit], chunk_size: int, overlap: int) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    first = 0
    while first < len(units):
        last, total = first, 0
        while last < len(units) and total + units[last].tokens <= chunk_size:
            total += units[last].tokens
            last += 1
        spans.append((units[first].start, units[last - 1].end))
        if last == len(units):
            break
        # Room is kept for the next new unit, so every chunk adds text and the loop always advances.
        first = _overlap_start(units, first, last, min(overlap, chunk_size - units[last].tokens))
    return spans


def _overlap_start(units: list[_Unit], first: int, last: int, budget: int) -> int:
    """Index where the next chunk starts: trailing units of this one within `budget`, never all of them."""
    start, used = last, 0
    while start - 1 > first and used + units[start - 1].tokens <= budget:
        start -= 1
        used += units[start].tokens
    return start


def split_chunk(chunk: Chunk, page_text: str) -> list[Chunk]:
    """Cut a chunk in two at the sentence end, clause mark or space nearest its middle, for when the
    embedding server rejects it as too long. Piece i keeps the parent's position, takes part "i"
    (or "<parent part>.i" when the parent is itself a piece) and the id
    sha256(f"{parent.id}\\x00{i}\\x00{content_hash}")[:32]. A one-character chunk comes back alone."""
    if page_text[chunk.start : chunk.end] != chunk.text:
        raise ValueError(f"chunk {chunk.id} of {chunk.source} does not match the page text given")
    spans = _spans(page_text, chunk.start, chunk.end, [chunk.start + _best_cut(chunk.text)])
    if len(spans) < 2:
        return [chunk]
    return [
        _make(
            page_text, s, e, chunk.source, chunk.page, chunk.position, f"{chunk.id}\x00{i}", _part(chunk, i)
        )
        for i, (s, e) in enumerate(spans)
    ]


def _best_cut(text: str) -> int:
    """Offset of the boundary nearest the middle, in the middle half: sentences, then clauses, spaces."""
    sentence_ends = [end for _, end in split_sentences(text)[:-1]]
    clause_ends = [match.end() for match in _CLAUSE_END.finditer(text)]
    spaces = [match.start() for match in _SPACE.finditer(text)]
    low, high, middle = len(text) / 4, len(text) * 3 / 4, len(text) / 2
    for cuts in (sentence_ends, clause_ends, spaces):
        inside = [cut for cut in cuts if low <= cut <= high and 0 < cut < len(text)]
        if inside:
            return min(inside, key=lambda cut: (abs(cut - middle), cut))
    return len(text) // 2


def _part(parent: Chunk, index: int) -> str:
    return f"{parent.part}.{index}" if parent.part else str(index)


def _make(
    page_text: str,
    start: int,
    end: int,
    source: str,
    page: int | None,
    position: int,
    seed: str,
    part: str = "",
) -> Chunk:
    text = page_text[start:end]
    content_hash = _sha256(text)
    ident = _seeded_id(seed, content_hash)
    return Chunk(source, page, position, start, end, text, content_hash, ident, count_tokens(text), part)


def _spans(text: str, start: int, end: int, cuts: list[int]) -> list[tuple[int, int]]:
    """The pieces of text[start:end] between sorted cut offsets, trimmed of whitespace, empty ones dropped."""
    spans, previous = [], start
    for cut in [*cuts, end]:
        s, e = previous, cut
        while s < e and text[s].isspace():
            s += 1
        while e > s and text[e - 1].isspace():
            e -= 1
        if s < e:
            spans.append((s, e))
        previous = cut
    return spans


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
