"""Answering: retrieve numbered chunks, prompt the chat model to answer only from them, time each stage."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.llms import LLM, ChatMessage, MessageRole
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

from rag.config import Settings
from rag.errors import BadRequest
from rag.fusion import Candidate, candidates, fuse
from rag.keyword import KeywordIndex
from rag.llm import ollama_errors
from rag.store import ChromaStore
from rag.tokens import CJK

log = logging.getLogger(__name__)

_CJK = re.compile(rf"[{CJK}]")
_WORD = re.compile(r"[A-Za-z]+")

NOT_COVERED = {
    "en": "The documents do not cover this.",
    "zh": "文档中没有涉及这个问题。",
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

MODES = ("hybrid", "vector", "keyword")


def language_of(text: str) -> str:
    """'zh' when the question is mostly Chinese, else 'en': the answer follows the question."""
    cjk = len(_CJK.findall(text))
    latin = sum(len(w) for w in _WORD.findall(text)) / 4  # a Latin word weighs about one CJK character
    return "zh" if cjk and cjk >= latin else "en"


@dataclass
class Source:
    n: int
    source: str
    page: int | None
    chunk_id: str
    score: float
    text: str
    start: int | None = None
    end: int | None = None
    # What each side said (rank 1 is best; None: that side did not return the chunk). `score` is the
    # fused score in hybrid mode, the cosine in vector mode, the BM25 score in keyword mode.
    vector_score: float | None = None
    vector_rank: int | None = None
    keyword_score: float | None = None
    keyword_rank: int | None = None
    fused_score: float | None = None


DEBUG_FIELDS = ("vector_score", "vector_rank", "keyword_score", "keyword_rank", "fused_score")


@dataclass
class Answer:
    answer: str
    sources: list[Source]
    model: str
    abstained: bool
    timings_ms: dict[str, float] = field(default_factory=dict)
    mode: str | None = None  # the retrieval mode in effect

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ChromaRetriever(BaseRetriever):
    """LlamaIndex retriever over our Chroma adapter; the query is embedded by the embed_model passed in."""

    def __init__(self, store: ChromaStore, embed_model: BaseEmbedding, top_k: int) -> None:
        super().__init__()
        self._store = store
        self._embed_model = embed_model
        self._top_k = top_k

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        vector = self._embed_model.get_query_embedding(query_bundle.query_str)
        return [
            NodeWithScore(node=TextNode(id_=h.record.id, text=h.record.text, metadata=h.record.metadata),
                          score=h.score)
            for h in self._store.query(vector, self._top_k)
        ]


def to_sources(nodes: list[NodeWithScore]) -> list[Source]:
    out = []
    for n, node in enumerate(nodes, start=1):
        meta = node.node.metadata
        out.append(Source(
            n=n, source=meta.get("source", "?"), page=meta.get("page"), chunk_id=node.node.node_id,
            score=round(float(node.score or 0.0), 4), text=node.node.get_content(),
            start=meta.get("start"), end=meta.get("end"),
        ))
    return out


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


def build_messages(question: str, sources: list[Source], lang: str) -> list[ChatMessage]:
    label, q_label = QUESTION_LABEL[lang]
    numbered = "\n\n".join(
        f"[{s.n}] ({s.source}{f', p. {s.page}' if s.page else ''})\n{s.text}" for s in sources
    )
    return [
        ChatMessage(role=MessageRole.SYSTEM, content=SYSTEM_PROMPT[lang]),
        ChatMessage(role=MessageRole.USER, content=f"{label}:\n{numbered}\n\n{q_label}: {question}"),
    ]


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
        # Loaded once here (or by the app's lifespan), never per query.
        self.keywords = keywords if keywords is not None else KeywordIndex.open(settings)

    def mode_for(self, requested: str | None = None) -> str:
        """The mode a question is answered in: the one asked for, or vector when the keyword index is out."""
        mode = requested or self.settings.retrieval_mode
        if mode not in MODES:
            raise BadRequest(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        return mode if mode == "vector" or self.keywords.available else "vector"

    def retrieve(self, question: str, top_k: int | None = None, mode: str | None = None) -> list[Source]:
        """The top_k chunks for `question`, best first, not yet filtered for relevance."""
        k = top_k or self.settings.top_k
        mode = self.mode_for(mode)
        self.store.check_model(self.settings.embed_model)
        depth = k if mode == "vector" else max(k, self.settings.retrieval_candidates)
        nodes = self._vector(question, depth) if mode != "keyword" else []
        hits = self.keywords.search(question, depth) if mode != "vector" else []
        found = self._rank(mode, [(n.node.node_id, float(n.score or 0.0)) for n in nodes],
                           [(h.chunk_id, h.score) for h in hits])
        return self._sources(found[:k], nodes, mode)

    def _vector(self, question: str, depth: int) -> list[NodeWithScore]:
        retriever = ChromaRetriever(self.store, self.embed_model, depth)
        with ollama_errors(self.settings, self.settings.embed_model):
            return retriever.retrieve(question)

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
        events = list(self.ask_stream(question, top_k, mode=mode))
        done = events[-1]
        return Answer(done["answer"], events[0]["sources"], done["model"], done["abstained"], done["timings_ms"],
                      done["mode"])

    def ask_stream(self, question: str, top_k: int | None = None, mode: str | None = None) -> Iterator[dict[str, Any]]:
        """Events: {"type": "sources"}, then {"type": "token"}..., then {"type": "done"} with timings.

        Retrieval runs before the first event, so its errors surface before anything is sent.
        """
        t0 = time.perf_counter()
        lang = language_of(question)
        mode = self.mode_for(mode)
        sources = self.relevant(self.retrieve(question, top_k, mode))
        t1 = time.perf_counter()
        yield {"type": "sources", "sources": sources}
        parts: list[str] = []
        if sources:
            with ollama_errors(self.settings, self.settings.chat_model):
                for chunk in self.llm.stream_chat(build_messages(question, sources, lang)):
                    if chunk.delta:
                        parts.append(chunk.delta)
                        yield {"type": "token", "text": chunk.delta}
        else:
            # Nothing relevant was retrieved: say so rather than let the model guess.
            parts.append(NOT_COVERED[lang])
            yield {"type": "token", "text": NOT_COVERED[lang]}
        if not "".join(parts).strip():
            parts = [NO_ANSWER[lang]]
            yield {"type": "token", "text": NO_ANSWER[lang]}
        t2 = time.perf_counter()
        answer = "".join(parts).strip()
        yield {
            "type": "done",
            "answer": answer,
            "model": self.settings.chat_model,
            "abstained": is_abstention(answer),
            "mode": mode,
            "timings_ms": {
                "retrieve": round((t1 - t0) * 1000, 1),
                "generate": round((t2 - t1) * 1000, 1),
                "total": round((t2 - t0) * 1000, 1),
            },
        }


def is_abstention(answer: str) -> bool:
    """A declined answer (the documents do not cover it), an empty one, or the no-answer notice."""
    flat = answer.strip().lower()
    declines = (*NOT_COVERED.values(), *NO_ANSWER.values())
    return any(flat.startswith(s.lower().rstrip(".。")) for s in declines) or not flat
