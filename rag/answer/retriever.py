"""Hybrid retrieval over our Chroma collection and BM25 index, as a LlamaIndex retriever.

`HybridRetriever` is what the pipeline retrieves with, and a LlamaIndex `BaseRetriever` a LlamaIndex user can
put in a `RetrieverQueryEngine` or a chat engine: its nodes carry our metadata (source, page, offsets, chunk id,
both sides' scores and ranks). It finds the best top_k chunks; filtering them for relevance is the caller's.
"""

from __future__ import annotations

from typing import Any, cast

import anyio
from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

from rag.answer.fusion import Candidate, candidates, fuse
from rag.answer.models import DEBUG_FIELDS, MODES, Mode, Source, require_question
from rag.config import Settings
from rag.errors import BadRequest
from rag.index.bm25 import KeywordIndex
from rag.index.chroma import ChromaStore, Record
from rag.ollama import Embedder, build_embedder

# Metadata a LlamaIndex prompt or embedding does not need to see: the model reads the source and the page.
_HIDDEN = ["chunk_id", "start", "end", *DEBUG_FIELDS]


class HybridRetriever(BaseRetriever):
    """The top_k chunks for a question: vectors, BM25 keywords, or both fused (RAG_RETRIEVAL_MODE).

    The keyword index is loaded once, when the retriever is made; the question is embedded by our Ollama
    adapter. `top_k` and `mode` default to the settings'.
    """

    def __init__(
        self,
        settings: Settings,
        store: ChromaStore,
        keywords: KeywordIndex,
        embedder: Embedder,
        top_k: int | None = None,
        mode: Mode | None = None,
    ) -> None:
        super().__init__()
        self.settings, self.store, self.keywords, self.embedder = settings, store, keywords, embedder
        self.top_k, self.mode = top_k, mode

    @classmethod
    def open(
        cls, settings: Settings, store: ChromaStore | None = None, top_k: int | None = None, mode: Mode | None = None
    ) -> HybridRetriever:
        """From settings: the store (opened unless given), the keyword index with jieba warmed up, the embedder."""
        keywords = KeywordIndex.open(settings)
        keywords.warm_up()  # jieba's dictionary loads now, not on the first Chinese question
        return cls(settings, store or ChromaStore.open(settings), keywords, build_embedder(settings), top_k, mode)

    def mode_for(self, requested: str | None = None) -> Mode:
        """The mode a question is answered in: the one asked for, or vector when the keyword index is out."""
        mode = requested or self.mode or self.settings.retrieval_mode
        if mode not in MODES:
            raise BadRequest(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        return cast(Mode, mode) if mode == "vector" or self.keywords.available else "vector"

    # -- our API: sources ---------------------------------------------------------------------------------

    def sources(
        self, question: str, top_k: int | None = None, mode: str | None = None, vector: list[float] | None = None
    ) -> list[Source]:
        """The top_k chunks for `question`, best first, not yet filtered for relevance.

        `vector` is the question's embedding when the caller has it already (see `asources`).
        """
        require_question(question)
        k = top_k or self.top_k or self.settings.top_k
        mode = self.mode_for(mode)
        self.store.check_model(self.settings.embed_model)
        depth = k if mode == "vector" else max(k, self.settings.retrieval_candidates)
        hits = []
        if mode != "keyword":
            hits = self.store.query(vector or self.embedder.embed_query(question), depth)
        words = self.keywords.search(question, depth) if mode != "vector" else []
        found = self._rank(mode, [(h.record.id, h.score) for h in hits], [(w.chunk_id, w.score) for w in words])
        return self._sources(found[:k], {h.record.id: h.record for h in hits}, mode)

    async def asources(self, question: str, top_k: int | None = None, mode: str | None = None) -> list[Source]:
        """`sources` for the event loop: the question is embedded by an awaited call that a cancelled
        request stops; the store and keyword lookups, local and short, run in a worker thread."""
        require_question(question)
        mode = self.mode_for(mode)
        vector = None
        if mode != "keyword":
            await anyio.to_thread.run_sync(self.store.check_model, self.settings.embed_model)
            vector = await self.embedder.aembed_query(question)
        return await anyio.to_thread.run_sync(self.sources, question, top_k, mode, vector)

    def _rank(self, mode: str, vector: list[tuple[str, float]], keyword: list[tuple[str, float]]) -> list[Candidate]:
        if mode != "hybrid":
            return candidates(vector, keyword)  # one side is empty: its own order
        s = self.settings
        return fuse(
            vector, keyword, s.fusion, rrf_k=s.rrf_k, vector_weight=s.fusion_vector_weight,
            depth=s.retrieval_candidates, sharpness=s.fusion_sharpness,
        )

    def _sources(self, found: list[Candidate], stored: dict[str, Record], mode: str) -> list[Source]:
        missing = [c.chunk_id for c in found if c.chunk_id not in stored]
        if missing:  # keyword-only hits: their text and metadata come from the store
            records, _ = self.store.get_with_embeddings(missing)
            stored.update({r.id: r for r in records})
        out: list[Source] = []
        for c in found:
            if c.chunk_id in stored:  # else the keyword index is ahead of the store while an ingest runs
                out.append(_source(len(out) + 1, c, stored[c.chunk_id], mode))
        return out

    # -- LlamaIndex's API: nodes ---------------------------------------------------------------------------

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return [as_node(s) for s in self.sources(query_bundle.query_str, vector=query_bundle.embedding)]

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        if query_bundle.embedding is not None:
            found = await anyio.to_thread.run_sync(self._retrieve, query_bundle)
            return found
        return [as_node(s) for s in await self.asources(query_bundle.query_str)]


def as_node(s: Source) -> NodeWithScore:
    """A source as LlamaIndex holds it: the chunk's text, our metadata, its score in the mode in effect."""
    meta: dict[str, Any] = s.model_dump(exclude={"n", "text", "score"})
    node = TextNode(
        id_=s.chunk_id, text=s.text, metadata=meta,
        excluded_llm_metadata_keys=_HIDDEN, excluded_embed_metadata_keys=_HIDDEN,
    )
    return NodeWithScore(node=node, score=s.score)


def _source(n: int, c: Candidate, record: Record, mode: str) -> Source:
    score = {"hybrid": c.fused, "vector": c.vector_score, "keyword": c.keyword_score}[mode] or 0.0
    meta = record.metadata
    return Source(
        n=n, source=meta.get("source", "?"), page=meta.get("page"), chunk_id=c.chunk_id,
        score=round(score, 6 if mode == "hybrid" else 4), text=record.text, start=meta.get("start"),
        end=meta.get("end"), vector_score=_round(c.vector_score), vector_rank=c.vector_rank,
        keyword_score=_round(c.keyword_score), keyword_rank=c.keyword_rank,
        fused_score=round(c.fused, 6) if mode == "hybrid" else None,
    )


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 4)
