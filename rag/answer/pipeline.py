"""Answering: retrieve numbered chunks, prompt the chat model to answer only from them, time each stage."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator, Iterator
from contextlib import aclosing
from typing import Any, cast

import anyio
from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.base.llms.types import ChatResponse
from llama_index.core.llms import LLM
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

from rag import ollama as ollama_adapter
from rag.answer.fusion import Candidate, candidates, fuse
from rag.answer.models import BLANK, MODES, Answer, Mode, Source, is_blank
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
from rag.config import Settings
from rag.errors import BadRequest
from rag.index.bm25 import KeywordIndex
from rag.index.chroma import ChromaStore
from rag.index.tokens import segmenter
from rag.ollama import ollama_errors

log = logging.getLogger(__name__)



class ChromaRetriever(BaseRetriever):
    """LlamaIndex retriever over our Chroma adapter; the query is embedded by the embed_model passed in,
    unless the query bundle brings its embedding."""

    def __init__(self, store: ChromaStore, embed_model: BaseEmbedding, top_k: int) -> None:
        super().__init__()
        self._store = store
        self._embed_model = embed_model
        self._top_k = top_k

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        vector = query_bundle.embedding or self._embed_model.get_query_embedding(query_bundle.query_str)
        return [
            NodeWithScore(node=TextNode(id_=h.record.id, text=h.record.text, metadata=h.record.metadata),
                          score=h.score)
            for h in self._store.query(vector, self._top_k)
        ]


def _source(n: int, c: Candidate, text: str, meta: dict[str, Any], mode: str) -> Source:
    score = {"hybrid": c.fused, "vector": c.vector_score, "keyword": c.keyword_score}[mode] or 0.0
    return Source(
        n=n, source=meta.get("source", "?"), page=meta.get("page"), chunk_id=c.chunk_id,
        score=round(score, 6 if mode == "hybrid" else 4), text=text, start=meta.get("start"), end=meta.get("end"),
        vector_score=_round(c.vector_score), vector_rank=c.vector_rank,
        keyword_score=_round(c.keyword_score), keyword_rank=c.keyword_rank,
        fused_score=round(c.fused, 6) if mode == "hybrid" else None,
    )


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 4)


class RagPipeline:
    """The same path for `/ask`, `rag ask` and `rag eval`: retrieve, then generate from the sources."""

    def __init__(
        self,
        settings: Settings,
        store: ChromaStore,
        llm: LLM,
        embed_model: BaseEmbedding,
        keywords: KeywordIndex | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.llm = llm
        self.embed_model = embed_model
        # Loaded once here (or by `open`), never per query.
        self.keywords = keywords if keywords is not None else KeywordIndex.open(settings)

    @classmethod
    def open(cls, settings: Settings, store: ChromaStore | None = None, llm: LLM | None = None) -> RagPipeline:
        """The pipeline as every caller builds it: the store (opened unless given), the keyword index loaded
        once with jieba warmed up, the chat model and the embedder from settings. Taking the store lock is
        the caller's part, as it spans the pipeline's life."""
        keywords = KeywordIndex.open(settings)
        if keywords.available:
            segmenter()  # jieba's dictionary loads now, not on the first Chinese question
        return cls(
            settings,
            store or ChromaStore.open(settings),
            llm or ollama_adapter.build_llm(settings),
            ollama_adapter.build_embed_model(settings),
            keywords,
        )

    def mode_for(self, requested: str | None = None) -> Mode:
        """The mode a question is answered in: the one asked for, or vector when the keyword index is out."""
        mode = requested or self.settings.retrieval_mode
        if mode not in MODES:
            raise BadRequest(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        return cast(Mode, mode) if mode == "vector" or self.keywords.available else "vector"

    def retrieve(
        self, question: str, top_k: int | None = None, mode: str | None = None, vector: list[float] | None = None
    ) -> list[Source]:
        """The top_k chunks for `question`, best first, not yet filtered for relevance.

        `vector` is the question's embedding when the caller has it already (see `aretrieve`).
        """
        require_question(question)
        k = top_k or self.settings.top_k
        mode = self.mode_for(mode)
        self.store.check_model(self.settings.embed_model)
        depth = k if mode == "vector" else max(k, self.settings.retrieval_candidates)
        nodes = self._vector(question, depth, vector) if mode != "keyword" else []
        hits = self.keywords.search(question, depth) if mode != "vector" else []
        found = self._rank(mode, [(n.node.node_id, float(n.score or 0.0)) for n in nodes],
                           [(h.chunk_id, h.score) for h in hits])
        return self._sources(found[:k], nodes, mode)

    async def aretrieve(self, question: str, top_k: int | None = None, mode: str | None = None) -> list[Source]:
        """`retrieve` for the event loop: the question is embedded by an awaited call that a cancelled
        request stops; the store and keyword lookups, local and short, run in a worker thread."""
        require_question(question)
        mode = self.mode_for(mode)
        vector = None
        if mode != "keyword":
            await anyio.to_thread.run_sync(self.store.check_model, self.settings.embed_model)
            with ollama_errors(self.settings, self.settings.embed_model):
                vector = await self.embed_model.aget_query_embedding(question)
        return await anyio.to_thread.run_sync(self.retrieve, question, top_k, mode, vector)

    def _vector(self, question: str, depth: int, vector: list[float] | None) -> list[NodeWithScore]:
        retriever = ChromaRetriever(self.store, self.embed_model, depth)
        with ollama_errors(self.settings, self.settings.embed_model):
            return retriever.retrieve(QueryBundle(question, embedding=vector))

    def _rank(self, mode: str, vector: list[tuple[str, float]], keyword: list[tuple[str, float]]) -> list[Candidate]:
        if mode != "hybrid":
            return candidates(vector, keyword)  # one side is empty: its own order
        s = self.settings
        return fuse(vector, keyword, s.fusion, rrf_k=s.rrf_k, vector_weight=s.fusion_vector_weight)

    def _sources(self, found: list[Candidate], nodes: list[NodeWithScore], mode: str) -> list[Source]:
        stored = {n.node.node_id: (n.node.get_content(), n.node.metadata) for n in nodes}
        missing = [c.chunk_id for c in found if c.chunk_id not in stored]
        if missing:  # keyword-only hits: their text and metadata come from the store
            records, _ = self.store.get_with_embeddings(missing)
            stored.update({r.id: (r.text, r.metadata) for r in records})
        out: list[Source] = []
        for c in found:
            if c.chunk_id in stored:  # else the keyword index is ahead of the store while an ingest runs
                out.append(_source(len(out) + 1, c, *stored[c.chunk_id], mode))
        return out

    def relevant(self, sources: list[Source]) -> list[Source]:
        kept = [s for s in sources if self.is_relevant(s)]
        for n, s in enumerate(kept, start=1):
            s.n = n
        return kept

    def is_relevant(self, s: Source) -> bool:
        """Vector evidence (cosine >= RAG_MIN_SCORE) or keyword evidence (BM25 > RAG_KEYWORD_MIN_SCORE).

        A fused score has no absolute meaning, so it is never compared with a threshold.
        """
        if s.vector_score is None and s.keyword_score is None:
            return s.score >= self.settings.min_score
        by_vector = s.vector_score is not None and s.vector_score >= self.settings.min_score
        return by_vector or (s.keyword_score or 0.0) > self.settings.keyword_min_score

    def ask(self, question: str, top_k: int | None = None, mode: str | None = None) -> Answer:
        return _answer(list(self.ask_stream(question, top_k, mode=mode)))

    async def aask(self, question: str, top_k: int | None = None, mode: str | None = None) -> Answer:
        return _answer([event async for event in self.aask_stream(question, top_k, mode=mode)])

    def ask_stream(self, question: str, top_k: int | None = None, mode: str | None = None) -> Iterator[dict[str, Any]]:
        """Events: {"type": "sources"}, then {"type": "token"}..., then {"type": "done"} with timings.

        Retrieval runs before the first event, so its errors surface before anything is sent.
        """
        turn = _Turn(self, question, mode)
        yield turn.sources(self.retrieve(question, top_k, turn.mode))
        if turn.messages:
            with ollama_errors(self.settings, self.settings.chat_model):
                for chunk in self.llm.stream_chat(turn.messages):
                    yield from turn.feed(chunk)
        yield from turn.finish()

    async def aask_stream(
        self, question: str, top_k: int | None = None, mode: str | None = None
    ) -> AsyncGenerator[dict[str, Any], None]:
        """`ask_stream` for the event loop. Cancelling it (or closing it) closes the request to Ollama,
        which stops generating."""
        turn = _Turn(self, question, mode)
        yield turn.sources(await self.aretrieve(question, top_k, turn.mode))
        if turn.messages:
            with ollama_errors(self.settings, self.settings.chat_model):
                # aclosing: LlamaIndex's wrappers do not close the stream under them when left early.
                async with aclosing(await self.llm.astream_chat(turn.messages)) as stream:
                    async for chunk in stream:
                        for event in turn.feed(chunk):
                            yield event
        for event in turn.finish():
            yield event


def require_question(question: str) -> None:
    if is_blank(question):
        raise BadRequest(f"question: {BLANK}")


def _answer(events: list[dict[str, Any]]) -> Answer:
    done = events[-1]
    return Answer(answer=done["answer"], sources=events[0]["sources"], model=done["model"],
                  abstained=done["abstained"], timings_ms=done["timings_ms"], mode=done["mode"],
                  warnings=done["warnings"])


class _Turn:
    """One answer under way, shared by the sync and async paths: the prompt, the tokens, the timings."""

    def __init__(self, pipeline: RagPipeline, question: str, mode: str | None) -> None:
        require_question(question)
        self.settings, self.question = pipeline.settings, question
        self.pipeline, self.lang, self.mode = pipeline, language_of(question), pipeline.mode_for(mode)
        self.started = time.perf_counter()
        self.retrieved = self.started
        self.given: list[Source] = []
        self.parts: list[str] = []
        self.evaluated: int | None = None  # prompt_eval_count, from Ollama's last chunk
        self.warnings: list[dict[str, str]] = []

    def sources(self, found: list[Source]) -> dict[str, Any]:
        """The sources event: the relevant sources that fit the prompt, numbered as the model sees them."""
        relevant = self.pipeline.relevant(found)
        self.given = fit_sources(self.question, relevant, self.lang, self.settings)
        if len(self.given) < len(relevant):
            self.warnings.append(left_out_warning(len(self.given), len(relevant), self.settings))
            log.warning("%s", self.warnings[-1]["message"])
        self.retrieved = time.perf_counter()
        return {"type": "sources", "sources": self.given}

    @property
    def messages(self) -> list[Any]:
        """The chat messages; none when nothing relevant was found (the model is not asked to guess)."""
        return build_messages(self.question, self.given, self.lang) if self.given else []

    def feed(self, chunk: ChatResponse) -> Iterator[dict[str, Any]]:
        self.evaluated = prompt_tokens(chunk.raw) or self.evaluated
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
        yield self._done(time.perf_counter())

    def _done(self, now: float) -> dict[str, Any]:
        answer = "".join(self.parts).strip()
        return {
            "type": "done",
            "answer": answer,
            "model": self.settings.chat_model,
            "abstained": is_abstention(answer),
            "mode": self.mode,
            "warnings": self.warnings,
            "timings_ms": {
                "retrieve": round((self.retrieved - self.started) * 1000, 1),
                "generate": round((now - self.retrieved) * 1000, 1),
                "total": round((now - self.started) * 1000, 1),
            },
        }


def is_abstention(answer: str) -> bool:
    """A declined answer (the documents do not cover it), an empty one, or the no-answer notice."""
    flat = answer.strip().lower()
    declines = (*NOT_COVERED.values(), *NO_ANSWER.values())
    return any(flat.startswith(s.lower().rstrip(".。")) for s in declines) or not flat
