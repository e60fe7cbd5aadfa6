"""What the OpenAI- and Ollama-compatible endpoints share: the one model they offer, a chat's turns, and
the Sources block put in the answer where their clients show it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rag.answer.models import Source
from rag.answer.prompts import language_of
from rag.config import Settings
from rag.errors import UnknownModel

SOURCES_LABEL = {"en": "Sources", "zh": "资料"}


def model_names(settings: Settings) -> tuple[str, str]:
    """The name clients list and send: `rag`, also as Ollama spells it with its tag, `rag:latest`."""
    return settings.model_name, f"{settings.model_name}:latest"


def require_model(settings: Settings, model: str) -> None:
    if model not in model_names(settings):
        raise UnknownModel(
            f"model '{model}' is not offered here; this service answers as '{settings.model_name}' "
            "(the indexed documents); list models with GET /v1/models or /api/tags"
        )


def extra_fields(sources: Sequence[Source], standalone: str | None) -> dict[str, Any]:
    """Fields neither OpenAI nor Ollama has, for clients that read them: the full sources, and what a follow-up
    searched for."""
    extra: dict[str, Any] = {"sources": [s.public() for s in sources]}
    if standalone is not None:
        extra["standalone_question"] = standalone
    return extra


def sources_block(sources: Sequence[Source], question: str, settings: Settings) -> str:
    """"\\n\\nSources:\\n[1] file, p. 2 ..." in the question's language; empty when switched off or none."""
    if not settings.chat_sources or not sources:
        return ""
    lang = language_of(question)
    page = "第 {} 页" if lang == "zh" else "p. {}"
    lines = [f"[{s.n}] {s.source}" + (f", {page.format(s.page)}" if s.page else "") for s in sources]
    colon = "：" if lang == "zh" else ":"
    return f"\n\n{SOURCES_LABEL[lang]}{colon}\n" + "\n".join(lines)
