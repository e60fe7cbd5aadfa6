"""QA datasets: rows read and checked from JSON Lines, and drafts written from the index by the chat model."""

from __future__ import annotations

import json
import logging
import random
from contextlib import nullcontext
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rag.answer.prompts import language_of
from rag.config import Settings
from rag.errors import BadRequest
from rag.eval.judge import InvalidReply, JudgeFailed, StructuredChat, text_schema
from rag.index.chroma import ChromaStore, Record

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)


class SourceRef(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source: str = Field(min_length=1)
    page: int | None = None


class QARow(BaseModel):
    """A dataset row; other keys (notes, language tags) are allowed and ignored."""

    model_config = ConfigDict(extra="allow")
    id: str | int | None = None
    question: str = Field(min_length=1)
    reference_answer: str | None = None
    reference_sources: list[SourceRef] = Field(default_factory=list)


def load_jsonl(path: Path, model: type[M]) -> list[M]:
    """Rows of a JSON Lines file, each validated; a bad line is reported with its number."""
    rows = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(model.model_validate(json.loads(line)))
        except json.JSONDecodeError as exc:
            raise BadRequest(f"{path}:{lineno}: not JSON ({exc.msg})") from None
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise BadRequest(f"{path}:{lineno}: {problems}") from None
    if not rows:
        raise BadRequest(f"{path} has no rows")
    return rows


# -- drafting a dataset from the index --------------------------------------------------------------

DRAFT_PROMPT = {
    "en": "Write one question that the passage answers, and the short answer to it, in English. The question "
          "must make sense on its own, without the passage.",
    "zh": "根据这段资料写一个问题和它的简短答案，用中文。问题本身要能看懂，不依赖这段资料。",
}
MIN_CHUNK_CHARS = 40  # headings and stubs make poor questions


def sample_chunks(store: ChromaStore, n: int, seed: int) -> list[Record]:
    """n chunks chosen with a seeded RNG from the store's chunks sorted by id: the same index, the same pick."""
    usable = sorted((r for r in store.all_records() if len(r.text.strip()) >= MIN_CHUNK_CHARS), key=lambda r: r.id)
    return random.Random(seed).sample(usable, min(n, len(usable)))


def draft_schema() -> dict[str, Any]:
    return {"type": "object", "properties": {"question": text_schema(), "answer": text_schema()},
            "required": ["question", "answer"]}


def _draft_check(reply: Any) -> dict[str, str]:
    if not isinstance(reply, dict) or not all(isinstance(reply.get(k), str) and reply[k].strip()
                                              for k in ("question", "answer")):
        raise InvalidReply('expected {"question": "...", "answer": "..."} with both non-empty')
    return {k: reply[k].strip() for k in ("question", "answer")}


def draft_row(chat: StructuredChat, chunk: Record) -> dict[str, Any] | None:
    """One drafted row labelled with the chunk's source (and page), or None when the model failed twice."""
    lang = language_of(chunk.text)
    messages = [{"role": "system", "content": DRAFT_PROMPT[lang]}, {"role": "user", "content": chunk.text}]
    try:
        got = chat.ask(messages, draft_schema(), _draft_check, [])
    except JudgeFailed as exc:
        log.warning("no question for chunk %s: %s", chunk.id, exc.message)
        return None
    ref = {"source": chunk.metadata.get("source", "?")}
    if chunk.metadata.get("page") is not None:
        ref["page"] = chunk.metadata["page"]
    return {"question": got["question"], "reference_answer": got["answer"], "reference_sources": [ref],
            "chunk_id": chunk.id, "lang": lang, "drafted_by": chat.model}


def draft_dataset(settings: Settings, n: int, seed: int, model: str | None = None) -> list[dict[str, Any]]:
    from rag.index.lock import store_lock

    with store_lock(settings, "rag eval generate") if not settings.chroma_host else nullcontext():
        chunks = sample_chunks(ChromaStore.open(settings), n, seed)
    chat = StructuredChat(settings, model or settings.chat_model, seed)
    rows = [row for chunk in chunks if (row := draft_row(chat, chunk)) is not None]
    return [{"id": f"g{i:03d}", **row} for i, row in enumerate(rows, start=1)]
