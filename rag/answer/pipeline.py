"""Answering: retrieve numbered chunks, prompt the chat model to answer only from them, time each stage."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator, Iterator, Sequence
from contextlib import aclosing
from typing import Any

from llama_index.core.base.llms.types import ChatResponse
from llama_index.core.llms import LLM

from rag.answer import coverage
from rag.answer.conversation import acondense, condense, conversation, history_warning
from rag.answer.models import Answer, AnswerWarning, Message, Mode, Source, Usage, require_question
from rag.answer.prompts import (
    NO_ANSWER,
    NOT_COVERED,
    build_messages,
    fit_sources,
    language_of,
    left_out_warning,
    prompt_tokens,
    truncation_warning,
)
from rag.answer.retriever import HybridRetriever
from rag.config import Settings
from rag.index.chroma import ChromaStore
from rag.ollama import CONDENSE_TOKENS, build_llm, ollama_errors

log = logging.getLogger(__name__)


class RagPipeline:
    """The same path for `/ask`, `rag ask` and `rag eval`: retrieve, then generate from the sources."""

    def __init__(self, settings: Settings, retriever: HybridRetriever, llm: LLM, condenser: LLM | None = None) -> None:
        # The one way this project retrieves; the keyword index was loaded once, by the retriever's builder.
        self.settings, self.retriever, self.llm = settings, retriever, llm
        # The same chat model, asked for one short line: it rewrites follow-up questions.
        self.condenser = condenser or build_llm(settings, num_predict=CONDENSE_TOKENS, stops=["\n"])
        self.store, self.keywords = retriever.store, retriever.keywords

    @classmethod
    def open(cls, settings: Settings, store: ChromaStore | None = None, llm: LLM | None = None) -> RagPipeline:
        """The pipeline as every caller builds it: `HybridRetriever.open` and the chat model, from settings.
        Taking the store lock is the caller's part, as it spans the pipeline's life."""
        return cls(settings, HybridRetriever.open(settings, store), llm or build_llm(settings))

    def mode_for(self, requested: str | None = None) -> Mode:
        return self.retriever.mode_for(requested)

    def retrieve(
        self, question: str, top_k: int | None = None, mode: str | None = None, vector: list[float] | None = None
    ) -> list[Source]:
        """The top_k chunks for `question`, best first, not yet filtered for relevance (`HybridRetriever.sources`)."""
        return self.retriever.sources(question, top_k, mode, vector)

    async def aretrieve(self, question: str, top_k: int | None = None, mode: str | None = None) -> list[Source]:
        """`retrieve` for the event loop; a cancelled request stops the question's embedding."""
        return await self.retriever.asources(question, top_k, mode)

    def relevant(self, sources: list[Source], question: str, mode: str) -> list[Source]:
        """The sources to answer from; none when the documents do not cover the question (rag.answer.coverage)."""
        return coverage.relevant(question, sources, mode, self.keywords, self.settings)

    def ask(
        self, question: str, top_k: int | None = None, mode: str | None = None, history: Sequence[Message] = ()
    ) -> Answer:
        """The answer to `question`; with `history` (the turns before it), a follow-up is made standalone
        by the chat model before retrieval (`Answer.standalone_question`)."""
        turn = _Turn(self, question, mode, history)
        for _ in self._events(turn, top_k):
            pass
        return turn.answer()

    async def aask(
        self, question: str, top_k: int | None = None, mode: str | None = None, history: Sequence[Message] = ()
    ) -> Answer:
        turn = _Turn(self, question, mode, history)
        async with aclosing(self._aevents(turn, top_k)) as events:
            async for _ in events:
                pass
        return turn.answer()

    def ask_stream(
        self, question: str, top_k: int | None = None, mode: str | None = None, history: Sequence[Message] = ()
    ) -> Iterator[dict[str, Any]]:
        """Events: {"type": "sources"}, then {"type": "token"}..., then {"type": "done"} with timings.

        The rewrite of a follow-up and retrieval run before the first event, so their errors surface
        before anything is sent.
        """
        return self._events(_Turn(self, question, mode, history), top_k)

    def aask_stream(
        self, question: str, top_k: int | None = None, mode: str | None = None, history: Sequence[Message] = ()
    ) -> AsyncGenerator[dict[str, Any], None]:
        """`ask_stream` for the event loop. Cancelling it (or closing it) closes the request to Ollama,
        which stops generating."""
        return self._aevents(_Turn(self, question, mode, history), top_k)

    def _events(self, turn: _Turn, top_k: int | None) -> Iterator[dict[str, Any]]:
        if turn.conversation.is_follow_up:
            with ollama_errors(self.settings, self.settings.chat_model):
                turn.rewritten(condense(self.condenser, turn.conversation, turn.lang, self.keywords.tokenizer))
        yield turn.sources(self.retrieve(turn.question, top_k, turn.mode))
        if turn.messages:
            with ollama_errors(self.settings, self.settings.chat_model):
                for chunk in self.llm.stream_chat(turn.messages):
                    yield from turn.feed(chunk)
        yield from turn.finish()

    async def _aevents(self, turn: _Turn, top_k: int | None) -> AsyncGenerator[dict[str, Any], None]:
        if turn.conversation.is_follow_up:
            with ollama_errors(self.settings, self.settings.chat_model):
                tokenizer = self.keywords.tokenizer
                turn.rewritten(await acondense(self.condenser, turn.conversation, turn.lang, tokenizer))
        yield turn.sources(await self.aretrieve(turn.question, top_k, turn.mode))
        if turn.messages:
            with ollama_errors(self.settings, self.settings.chat_model):
                # aclosing: LlamaIndex's wrappers do not close the stream under them when left early.
                async with aclosing(await self.llm.astream_chat(turn.messages)) as stream:
                    async for chunk in stream:
                        for event in turn.feed(chunk):
                            yield event
        for event in turn.finish():
            yield event


class _Turn:
    """One answer under way, shared by the sync and async paths: the prompt, the tokens, the timings."""

    def __init__(self, pipeline: RagPipeline, question: str, mode: str | None, history: Sequence[Message]) -> None:
        require_question(question)
        self.settings, self.question = pipeline.settings, question
        self.pipeline, self.lang, self.mode = pipeline, language_of(question), pipeline.mode_for(mode)
        self.conversation = conversation(question, history, self.settings, self.lang)
        self.standalone: str | None = None  # a follow-up's rewrite, once made
        self.started = time.perf_counter()
        self.condensed = self.retrieved = self.started
        self.given: list[Source] = []
        self.parts: list[str] = []
        self.evaluated: int | None = None  # prompt_eval_count, from Ollama's last chunk
        self.generated = 0  # eval_count, from the same chunk
        self.warnings: list[dict[str, str]] = []
        if self.conversation.dropped:
            self.warnings.append(history_warning(self.conversation.dropped, self.settings))
        self.finished: float | None = None

    def rewritten(self, standalone: str) -> None:
        """The follow-up as it is searched for and answered."""
        self.question = self.standalone = standalone
        self.condensed = time.perf_counter()

    def sources(self, found: list[Source]) -> dict[str, Any]:
        """The sources event: the relevant sources that fit the prompt, numbered as the model sees them."""
        relevant = self.pipeline.relevant(found, self.question, self.mode)
        self.given = fit_sources(self.question, relevant, self.lang, self.settings)
        if len(self.given) < len(relevant):
            self.warnings.append(left_out_warning(len(self.given), len(relevant), self.settings))
            log.warning("%s", self.warnings[-1]["message"])
        self.retrieved = time.perf_counter()
        rewrite = {} if self.standalone is None else {"standalone_question": self.standalone}
        return {"type": "sources", "sources": self.given, **rewrite}

    @property
    def messages(self) -> list[Any]:
        """The chat messages; none when nothing relevant was found (the model is not asked to guess)."""
        return build_messages(self.question, self.given, self.lang) if self.given else []

    def feed(self, chunk: ChatResponse) -> Iterator[dict[str, Any]]:
        self.evaluated = prompt_tokens(chunk.raw) or self.evaluated
        self.generated = prompt_tokens(chunk.raw, "eval_count") or self.generated
        if chunk.delta:
            self.parts.append(chunk.delta)
            yield {"type": "token", "text": chunk.delta}

    def finish(self) -> Iterator[dict[str, Any]]:
        if not self.given:
            self.parts.append(NOT_COVERED[self.lang])
            yield {"type": "token", "text": NOT_COVERED[self.lang]}
        if not "".join(self.parts).strip():
            self.parts = [NO_ANSWER[self.lang]]
            yield {"type": "token", "text": NO_ANSWER[self.lang]}
        if cut := truncation_warning(self.evaluated, self.settings):
            self.warnings.append(cut)
            log.warning("%s", cut["message"])
        self.finished = time.perf_counter()
        yield {"type": "done", **self.answer().model_dump(exclude={"sources"})}

    def answer(self) -> Answer:
        """The answer so far (the whole of it once `finish` has run)."""
        text = "".join(self.parts).strip()
        now = self.finished or time.perf_counter()
        timings = {
            "retrieve": round((self.retrieved - self.condensed) * 1000, 1),
            "generate": round((now - self.retrieved) * 1000, 1),
            "total": round((now - self.started) * 1000, 1),
        }
        if self.standalone is not None:
            timings = {"condense": round((self.condensed - self.started) * 1000, 1), **timings}
        return Answer(
            answer=text, sources=self.given, model=self.settings.chat_model, abstained=is_abstention(text),
            mode=self.mode, warnings=[AnswerWarning.model_validate(w) for w in self.warnings], timings_ms=timings,
            standalone_question=self.standalone,
            usage=Usage(prompt_tokens=self.evaluated or 0, completion_tokens=self.generated),
        )


def is_abstention(answer: str) -> bool:
    """A declined answer (the documents do not cover it), an empty one, or the no-answer notice."""
    flat = answer.strip().lower()
    declines = (*NOT_COVERED.values(), *NO_ANSWER.values())
    return any(flat.startswith(s.lower().rstrip(".。")) for s in declines) or not flat
