"""The prompt: what the chat model is told, sized to fit its context, and whether Ollama had to cut it."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

from llama_index.core.llms import ChatMessage, MessageRole

from rag.answer.models import Source
from rag.config import Settings
from rag.index.tokens import CJK

_CJK = re.compile(rf"[{CJK}]")
_WORD = re.compile(r"[A-Za-z]+")

NOT_COVERED = {
    "en": "The documents do not cover this.",
    "zh": "文档中没有涉及这个问题。",
}
# Said before the evidence when the model's answer was held back (auto mode): no source supported it.
NOT_SUPPORTED = {
    "en": "The model's answer was not supported by the sources, so here is what they say:",
    "zh": "模型的回答没有得到资料的支持，以下是资料原文：",
}
# Said before the evidence when the model's checked sentences do not give what the question asks for.
NOT_ANSWERED = {
    "en": "The model's answer did not say what was asked, so here is what the sources say:",
    "zh": "模型的回答没有给出所问的内容，以下是资料原文：",
}
# Said instead of an empty answer: a small model sometimes starts by copying a source's "[n]" line, which
# the stop sequences end at once. The sources are still returned; the user is told to read them.
NO_ANSWER = {
    "en": "The model gave no answer; read the sources below.",
    "zh": "模型没有给出回答，请阅读下面的资料。",
}

SYSTEM_PROMPT = {
    "en": (
        "You answer questions using only the numbered sources you are given. "
        "Cite the sources you use like [1] or [2]. "
        f"If the sources do not contain the answer, reply exactly: {NOT_COVERED['en']} "
        "Answer in English, in one to three sentences."
    ),
    "zh": (
        "你只根据给出的编号资料回答问题。引用资料时写 [1]、[2]。"
        f"如果资料中没有答案，就只回答：{NOT_COVERED['zh']}"
        "用中文回答，一到三句话。"
    ),
}

QUESTION_LABEL = {"en": ("Sources", "Question"), "zh": ("资料", "问题")}

# An estimate of chat-model tokens meant to err high, whatever the model: a run of ASCII letters is
# ceil(len/3) tokens, a digit, a newline or another ASCII mark 1, any other character 2 (CJK, kana,
# accents). Against SmolLM2's tokenizer on data/docs: English +43-57%, Chinese +13-18%.
_RUNS = re.compile(r"([A-Za-z]+)|([\x21-\x7e\n])|(\S)")
TEMPLATE_TOKENS = 16  # the chat template's role markers around two messages, generously


def estimate_tokens(text: str) -> int:
    total = 0
    for letters, ascii_mark, _other in _RUNS.findall(text):
        total += math.ceil(len(letters) / 3) if letters else 1 if ascii_mark else 2
    return total


def prompt_budget(settings: Settings) -> int:
    """Tokens the prompt may take: num_ctx less room for the answer (num_predict, and at least a quarter,
    which is what the local engine keeps free when it cuts a prompt)."""
    return settings.num_ctx - max(settings.num_predict, settings.num_ctx // 4)


def language_of(text: str) -> str:
    """'zh' when the question is mostly Chinese, else 'en': the answer follows the question."""
    cjk = len(_CJK.findall(text))
    latin = sum(len(w) for w in _WORD.findall(text)) / 4  # a Latin word weighs about one CJK character
    return "zh" if cjk and cjk >= latin else "en"


def _numbered(s: Source) -> str:
    return f"[{s.n}] ({s.source}{f', p. {s.page}' if s.page else ''})\n{s.text}"


def build_messages(question: str, sources: Sequence[Source], lang: str) -> list[ChatMessage]:
    label, q_label = QUESTION_LABEL[lang]
    numbered = "\n\n".join(_numbered(s) for s in sources)
    return [
        ChatMessage(role=MessageRole.SYSTEM, content=SYSTEM_PROMPT[lang]),
        ChatMessage(role=MessageRole.USER, content=f"{label}:\n{numbered}\n\n{q_label}: {question}"),
    ]


def fit_sources(question: str, sources: list[Source], lang: str, settings: Settings) -> list[Source]:
    """The best sources that fit in the prompt budget beside the instructions and the question (the first
    one always: an over-long question is reported by `truncation_warning` instead)."""
    used = TEMPLATE_TOKENS + estimate_tokens(SYSTEM_PROMPT[lang]) + estimate_tokens(question) + 8
    kept: list[Source] = []
    for s in sources:
        used += estimate_tokens(_numbered(s)) + 2
        if kept and used > prompt_budget(settings):
            break
        kept.append(s)
    return kept


def warning(code: str, message: str) -> dict[str, str]:
    return {"code": code, "message": message}


def left_out_warning(given: int, found: int, settings: Settings) -> dict[str, str]:
    return warning(
        "sources_left_out",
        f"{found - given} of {found} relevant sources were left out so that the prompt fits the model's context "
        f"(RAG_NUM_CTX {settings.num_ctx} tokens, {settings.num_ctx - prompt_budget(settings)} of them kept for "
        "the answer); lower top_k or RAG_CHUNK_SIZE, or raise RAG_NUM_CTX",
    )


def prompt_tokens(raw: Any, key: str = "prompt_eval_count") -> int | None:
    """prompt_eval_count (or another count, e.g. eval_count) from the last chunk of an Ollama chat response,
    when it has one."""
    count = raw.get(key) if isinstance(raw, dict) else getattr(raw, key, None)
    return int(count) if isinstance(count, int) else None


def truncation_warning(evaluated: int | None, settings: Settings) -> dict[str, str] | None:
    """A warning when the prompt filled the context: Ollama then cuts it from the front without saying so
    (it evaluates num_ctx tokens; the local engine keeps the last three quarters). A prompt partly served
    from Ollama's cache reports fewer tokens, so a cut one may then go unnoticed."""
    if evaluated is None or evaluated < prompt_budget(settings):
        return None
    return warning(
        "prompt_truncated",
        f"the prompt filled the model's context ({evaluated} tokens evaluated, RAG_NUM_CTX {settings.num_ctx}): "
        "it was probably cut, so the model may not have seen the instructions or every source; ask a shorter "
        "question, lower top_k or RAG_CHUNK_SIZE, or raise RAG_NUM_CTX",
    )
