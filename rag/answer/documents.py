"""A page as it was indexed, put back together from its chunks, so a citation can be shown in its place."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rag.index.chroma import Record


@dataclass(frozen=True)
class PageText:
    """The extracted text of one page (or of a whole file without pages), as far as its chunks cover it.

    Chunk offsets index this text exactly: `text[start:end] == chunk text`. What no chunk holds (the
    whitespace between sentences the chunker left out) is a space, so offsets stay exact.
    """

    source: str
    page: int | None
    text: str
    chunks: list[tuple[str, int, int]]  # (chunk id, start, end), in reading order


def page_text(source: str, page: int | None, records: Sequence[Record]) -> PageText | None:
    """The page rebuilt from the chunks of `source` on `page`; None when none is stored there."""
    placed = sorted(
        (int(r.metadata["start"]), r) for r in records
        if r.metadata.get("page") == page and isinstance(r.metadata.get("start"), int)
    )
    if not placed:
        return None
    text = ""
    for start, record in placed:
        if start > len(text):
            text += " " * (start - len(text))
        text = text[:start] + record.text + text[start + len(record.text):]
    chunks = [(r.id, start, start + len(r.text)) for start, r in placed]
    return PageText(source, page, text, chunks)
