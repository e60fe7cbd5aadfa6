"""Follow-up questions: a conversation's last user turn made standalone, from as much history as fits.

A follow-up ("Where is that written?") names nothing retrieval can find. Before retrieving, the chat model
rewrites it with the conversation's words; the rewrite is kept only when it still asks what the user asked
(it holds every content word of the follow-up and is not a copy of an earlier answer). A small model often
fails that, so the fallback is plain: the previous question and the follow-up, searched together.
A first question is never rewritten: no extra model call.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from llama_index.core.llms import LLM, ChatMessage, MessageRole

from rag.answer.models import Message, require_question
from rag.answer.prompts import estimate_tokens, prompt_budget
from rag.config import Settings
from rag.errors import BadRequest
from rag.index.tokens import Tokenizer

log = logging.getLogger(__name__)

# What the OpenAI and Ollama facades append to an answer; not part of what was said, so not history.
SOURCES_BLOCK = re.compile(r"\n+(?:Sources|资料)[:：]\n(?:\[\d+\][^\n]*\n?)+\s*$")
_CITATION = re.compile(r"\s*\[\d+\]")
_LABEL = re.compile(r"^\s*(?:standalone|rewritten)?\s*question\s*[:：]\s*|^\s*(?:独立)?问题\s*[:：]\s*", re.I)
MAX_REWRITE_CHARS = 400

CONDENSE_PROMPT = {
    "en": (
        "Rewrite the follow-up question so that it makes sense without the conversation, using the "
        "conversation's words for what it refers to. Reply with the rewritten question only.\n\n"
        "Conversation:\n{history}\n\nFollow-up question: {question}\nRewritten question:"
    ),
    "zh": (
        "把后续问题改写成不看对话也能理解的完整问题，用对话中的词语替换它所指的内容。只回答改写后的问题。\n\n"
        "对话：\n{history}\n\n后续问题：{question}\n改写后的问题："
    ),
}
SPEAKER = {"en": {"user": "User", "assistant": "Assistant"}, "zh": {"user": "用户", "assistant": "助手"}}


@dataclass
class Conversation:
    """The question (the last user turn) and the turns before it that fit, oldest first."""

    question: str
    history: list[Message] = field(default_factory=list)
    dropped: int = 0  # earlier turns left out so that the rewrite prompt fits num_ctx

    @property
    def is_follow_up(self) -> bool:
        return any(m.role == "user" for m in self.history)

    def previous_question(self) -> str:
        return next(m.text for m in reversed(self.history) if m.role == "user")


def split(messages: Sequence[Message]) -> tuple[str, list[Message]]:
    """(question, history) from a chat's messages: the last one must be the user's, and not blank."""
    if not messages:
        raise BadRequest("messages: give at least one message, the last one the user's question")
    last = messages[-1]
    if last.role != "user":
        raise BadRequest(f"messages: the last message must be the user's question, not a '{last.role}' message")
    try:
        require_question(last.text)
    except BadRequest as exc:
        raise BadRequest(f"messages[{len(messages) - 1}].content: {exc.message.split(': ', 1)[-1]}") from None
    return last.text, list(messages[:-1])


def conversation(question: str, history: Sequence[Message], settings: Settings, lang: str) -> Conversation:
    """The question and the turns before it that fit the model's context beside it, newest kept.

    System turns are left out (the service has its own instructions), and so are the sources blocks the
    facades append to answers."""
    said = [_spoken(m) for m in history if m.role in ("user", "assistant")]
    said = [m for m in said if m.text.strip()]
    room = prompt_budget(settings) - estimate_tokens(CONDENSE_PROMPT[lang]) - estimate_tokens(question) - 16
    kept: list[Message] = []
    for m in reversed(said):
        room -= estimate_tokens(m.text) + 4
        if room < 0:
            break
        kept.append(m)
    kept.reverse()
    return Conversation(question, kept, dropped=len(said) - len(kept))


def _spoken(m: Message) -> Message:
    return Message(role=m.role, content=SOURCES_BLOCK.sub("", m.text)) if m.role == "assistant" else m


def history_warning(dropped: int, settings: Settings) -> dict[str, str]:
    return {
        "code": "history_cut",
        "message": f"the {dropped} oldest turns of the conversation were left out so that it fits the model's "
        f"context (RAG_NUM_CTX {settings.num_ctx}); the newest turns were kept",
    }


def condense_messages(conv: Conversation, lang: str) -> list[ChatMessage]:
    names = SPEAKER[lang]
    history = "\n".join(f"{names[m.role]}: {_CITATION.sub('', m.text).strip()}" for m in conv.history)
    prompt = CONDENSE_PROMPT[lang].format(history=history, question=conv.question)
    return [ChatMessage(role=MessageRole.USER, content=prompt)]


def condense(llm: LLM, conv: Conversation, lang: str, tokenizer: Tokenizer) -> str:
    """The follow-up as a standalone question: the model's rewrite when it passes `accept`, else the
    previous question and the follow-up together."""
    return _kept(llm.chat(condense_messages(conv, lang)).message.content or "", conv, tokenizer)


async def acondense(llm: LLM, conv: Conversation, lang: str, tokenizer: Tokenizer) -> str:
    """`condense` for the event loop; a cancelled request stops the model."""
    return _kept((await llm.achat(condense_messages(conv, lang))).message.content or "", conv, tokenizer)


def _kept(said: str, conv: Conversation, tokenizer: Tokenizer) -> str:
    rewrite = clean(said)
    if accept(rewrite, conv, tokenizer):
        return rewrite
    log.info("rewrite %r of follow-up %r not kept; searching with the previous question too", rewrite, conv.question)
    return fallback(conv)


def clean(text: str) -> str:
    """The first line of a rewrite, without a label the model echoed or quotes around it."""
    line = next((ln for ln in text.strip().splitlines() if ln.strip()), "")
    return _LABEL.sub("", line).strip().strip("\"'“”「」").strip()


def accept(rewrite: str, conv: Conversation, tokenizer: Tokenizer) -> bool:
    """A rewrite that asks what the follow-up asked: every content word of the follow-up is in it, at most a
    third of its words are new to the conversation, it is not a copy of an earlier answer, nor a paragraph."""
    if not rewrite or len(rewrite) > MAX_REWRITE_CHARS:
        return False
    flat = _CITATION.sub("", rewrite).strip().lower()
    answers = (_CITATION.sub("", m.text).strip().lower() for m in conv.history if m.role == "assistant")
    if any(flat and (flat in a or a in flat) for a in answers):
        return False
    words = set(tokenizer.tokens(rewrite))
    said = {w for m in (*conv.history, Message(role="user", content=conv.question)) for w in tokenizer.tokens(m.text)}
    invented = words - said
    return set(tokenizer.tokens(conv.question)) <= words and len(invented) * 3 <= len(words)


def fallback(conv: Conversation) -> str:
    previous = conv.previous_question().strip()
    joiner = "" if previous.endswith(("?", "？", "。", ".", "!", "！")) else " —"
    return f"{previous}{joiner} {conv.question.strip()}"
