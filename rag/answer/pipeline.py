"""Answering: retrieve numbered chunks, prompt the chat model to answer only from them, time each stage."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator, Iterator, Sequence
from contextlib import aclosing, closing
from typing import Any, Literal

from llama_index.core.base.llms.types import ChatResponse
from llama_index.core.llms import LLM

from rag.answer import coverage
from rag.answer.conversation import acondense, condense, conversation, history_warning
from rag.answer.evidence import EvidenceFinder, evidence_answer, gives_what_is_asked, is_factoid
from rag.answer.gate import SentenceGate
from rag.answer.models import (
    Answer,
    AnswerMode,
    AnswerWarning,
    Claim,
    Evidence,
    Message,
    Mode,
    Source,
    Usage,
    require_question,
)
from rag.answer.prompts import (
    NO_ANSWER,
    NOT_ANSWERED,
    NOT_COVERED,
    NOT_SUPPORTED,
    TEMPLATE_TOKENS,
    build_messages,
    estimate_tokens,
    fit_sources,
    language_of,
    left_out_warning,
    prompt_tokens,
    truncation_warning,
)
from rag.answer.retriever import HybridRetriever
from rag.answer.support import SupportChecker
from rag.config import Settings
from rag.index.chroma import ChromaStore
from rag.ollama import CONDENSE_TOKENS, FACTOID_TOKENS, build_llm, ollama_errors

log = logging.getLogger(__name__)


class RagPipeline:
    """The same path for `/ask`, `rag ask` and `rag eval`: retrieve, then generate from the sources."""

    def __init__(
        self, settings: Settings, retriever: HybridRetriever, llm: LLM, condenser: LLM | None = None,
        short_llm: LLM | None = None,
    ) -> None:
        # The one way this project retrieves; the keyword index was loaded once, by the retriever's builder.
        self.settings, self.retriever, self.llm = settings, retriever, llm
        # The same chat model, asked for one short line: it rewrites follow-up questions.
        self.condenser = condenser or build_llm(settings, num_predict=CONDENSE_TOKENS, stops=["\n"])
        # A factoid (how many, which port, when) needs a sentence or two, not RAG_NUM_PREDICT tokens.
        self.short_llm = short_llm or build_llm(settings, num_predict=min(FACTOID_TOKENS, settings.num_predict))
        self.store, self.keywords = retriever.store, retriever.keywords
        self.evidence = EvidenceFinder(self.keywords.tokenizer)
        self.checker = SupportChecker(self.keywords.tokenizer)

    @classmethod
    def open(cls, settings: Settings, store: ChromaStore | None = None, llm: LLM | None = None) -> RagPipeline:
        """The pipeline as every caller builds it: `HybridRetriever.open` and the chat model, from settings.
        Taking the store lock is the caller's part, as it spans the pipeline's life."""
        return cls(settings, HybridRetriever.open(settings, store), llm or build_llm(settings), short_llm=llm)

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
        self, question: str, top_k: int | None = None, mode: str | None = None, history: Sequence[Message] = (),
        answer_mode: str | None = None,
    ) -> Answer:
        """The answer to `question`; with `history` (the turns before it), a follow-up is made standalone
        by the chat model before retrieval (`Answer.standalone_question`). `answer_mode`: extract, generate
        or auto (RAG_ANSWER_MODE)."""
        turn = _Turn(self, question, mode, history, answer_mode)
        for _ in self._events(turn, top_k):
            pass
        return turn.answer()

    async def aask(
        self, question: str, top_k: int | None = None, mode: str | None = None, history: Sequence[Message] = (),
        answer_mode: str | None = None,
    ) -> Answer:
        turn = _Turn(self, question, mode, history, answer_mode)
        async with aclosing(self._aevents(turn, top_k)) as events:
            async for _ in events:
                pass
        return turn.answer()

    def ask_stream(
        self, question: str, top_k: int | None = None, mode: str | None = None, history: Sequence[Message] = (),
        answer_mode: str | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Events: {"type": "sources"}, then {"type": "token"}..., then {"type": "done"} with timings.

        The rewrite of a follow-up and retrieval run before the first event, so their errors surface
        before anything is sent.
        """
        return self._events(_Turn(self, question, mode, history, answer_mode), top_k)

    def aask_stream(
        self, question: str, top_k: int | None = None, mode: str | None = None, history: Sequence[Message] = (),
        answer_mode: str | None = None,
    ) -> AsyncGenerator[dict[str, Any], None]:
        """`ask_stream` for the event loop. Cancelling it (or closing it) closes the request to Ollama,
        which stops generating."""
        return self._aevents(_Turn(self, question, mode, history, answer_mode), top_k)

    def _events(self, turn: _Turn, top_k: int | None) -> Iterator[dict[str, Any]]:
        if turn.conversation.is_follow_up:
            with ollama_errors(self.settings, self.settings.chat_model):
                turn.rewritten(condense(self.condenser, turn.conversation, turn.lang, self.keywords.tokenizer))
        yield turn.sources(self.retrieve(turn.question, top_k, turn.mode))
        if turn.messages:
            with ollama_errors(self.settings, self.settings.chat_model), \
                    closing(turn.llm.stream_chat(turn.messages)) as stream:
                for chunk in stream:
                    yield from turn.feed(chunk)
                    if turn.gate.stopped:  # closing the stream stops the model
                        break
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
                async with aclosing(await turn.llm.astream_chat(turn.messages)) as stream:
                    async for chunk in stream:
                        for event in turn.feed(chunk):
                            yield event
                        if turn.gate.stopped:  # leaving the stream closes it, which stops the model
                            break
        for event in turn.finish():
            yield event


class _Turn:
    """One answer under way, shared by the sync and async paths: the prompt, the tokens, the timings."""

    def __init__(
        self, pipeline: RagPipeline, question: str, mode: str | None, history: Sequence[Message],
        answer_mode: str | None,
    ) -> None:
        require_question(question)
        self.answer_mode: AnswerMode = answer_mode or pipeline.settings.answer_mode  # type: ignore[assignment]
        self.settings, self.question = pipeline.settings, question
        self.pipeline, self.lang, self.mode = pipeline, language_of(question), pipeline.mode_for(mode)
        self.conversation = conversation(question, history, self.settings, self.lang)
        self.standalone: str | None = None  # a follow-up's rewrite, once made
        self.started = time.perf_counter()
        self.condensed = self.retrieved = self.started
        self.given: list[Source] = []
        self.evidence: list[Evidence] = []
        self.claims: list[Claim] = []
        self.gate = SentenceGate(pipeline.checker, [], check_support=self.answer_mode == "auto")
        self.source: Literal["model", "evidence", "none"] = "none"  # declined, until the answer is known
        self.claimed = ""  # the part of the answer that makes claims (not a notice or a decline)
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
        self.evidence = self.pipeline.evidence.find(self.question, self.given)
        self.gate.sources = self.given
        self.retrieved = time.perf_counter()
        rewrite = {} if self.standalone is None else {"standalone_question": self.standalone}
        return {"type": "sources", "sources": self.given, **rewrite}

    @property
    def messages(self) -> list[Any]:
        """The chat messages; none when nothing relevant was found (the model is not asked to guess), in
        extract mode (the evidence is the answer), and in auto mode when no sentence of the sources answers
        the question (nothing could back what the model would say)."""
        if not self.given or self.answer_mode == "extract" or (self.answer_mode == "auto" and not self.evidence):
            return []
        return build_messages(self.question, self.given, self.lang)

    @property
    def llm(self) -> LLM:
        return self.pipeline.short_llm if is_factoid(self.question) else self.pipeline.llm

    def feed(self, chunk: ChatResponse) -> Iterator[dict[str, Any]]:
        """The model's text through the sentence gate: whole sentences, each checked in auto mode."""
        self.evaluated = prompt_tokens(chunk.raw) or self.evaluated
        self.generated = prompt_tokens(chunk.raw, "eval_count") or self.generated
        if chunk.delta and (shown := self.gate.feed(chunk.delta)):
            yield from self._say(shown)

    def _say(self, text: str) -> Iterator[dict[str, Any]]:
        self.parts.append(text)
        yield {"type": "token", "text": text}

    def finish(self) -> Iterator[dict[str, Any]]:
        if self.messages and (last := self.gate.finish()):
            yield from self._say(last)
        if self.gate.stopped:
            log.info("generation stopped (%s) after %s characters", self.gate.stopped, len(self.gate.text))
        yield from self._conclude()
        self.claims = self.pipeline.checker.claims(self.claimed, self.given) if self.claimed else []
        if self.source == "evidence":  # a quoted sentence is the source's text at its offsets: supported as is
            self.claims += [Claim(text=e.text, supported=True, score=1.0, source_n=e.n, start=e.start, end=e.end,
                                  cited=[e.n], citation_ok=True) for e in self.evidence]
        if self.gate.stopped and self.evaluated is None:
            # The stream was closed before Ollama's last chunk, which carries the counts: estimate them
            # (the estimate errs high, and the sources were fitted by it, so only an over-long question shows).
            self.evaluated = sum(estimate_tokens(str(m.content)) for m in self.messages) + TEMPLATE_TOKENS
            self.generated = self.generated or estimate_tokens(self.gate.text)
        if cut := truncation_warning(self.evaluated, self.settings):
            self.warnings.append(cut)
            log.warning("%s", cut["message"])
        self.finished = time.perf_counter()
        yield {"type": "done", **self.answer().model_dump(exclude={"sources"})}

    def _conclude(self) -> Iterator[dict[str, Any]]:
        """What to say when the model said nothing a source supports: the evidence, or a decline."""
        said = "".join(self.parts).strip()
        if not self.given or (self.answer_mode != "generate" and not self.evidence):
            yield from self._say(NOT_COVERED[self.lang])
        elif said and (self.answer_mode != "auto" or gives_what_is_asked(self.question, said)
                       or not any(gives_what_is_asked(self.question, e.text) for e in self.evidence)):
            self.source, self.claimed = "model", said
        elif self.answer_mode == "generate":
            yield from self._say(NO_ANSWER[self.lang])
        elif self.evidence:
            # auto: nothing the model said was supported, or what was did not give what was asked (and the
            # evidence does). The supported sentences already shown stay; the evidence follows them.
            quoted = evidence_answer(self.evidence, self.lang)
            self.source, self.claimed = "evidence", said
            notice = "" if self.answer_mode == "extract" else (NOT_ANSWERED if said else NOT_SUPPORTED)[self.lang]
            lead = ("\n\n" if said else "") + notice + ("" if not notice or self.lang == "zh" else " ")
            yield from self._say(lead + quoted)
        else:
            yield from self._say(NOT_COVERED[self.lang])

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
            answer_mode=self.answer_mode, answer_source=self.source, evidence=self.evidence, claims=self.claims,
            model_answer=self.gate.text.strip() if self.gate.text.strip() and self.gate.text.strip() != text else None,
        )


def is_abstention(answer: str) -> bool:
    """A declined answer (the documents do not cover it), an empty one, or the no-answer notice."""
    flat = answer.strip().lower()
    declines = (*NOT_COVERED.values(), *NO_ANSWER.values())
    return any(flat.startswith(s.lower().rstrip(".。")) for s in declines) or not flat
