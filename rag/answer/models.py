"""The answering domain model: a retrieval mode, a source, an answer. The HTTP API returns these as they are."""

from __future__ import annotations

import unicodedata
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from rag.config import AnswerMode as AnswerMode  # re-exported: the answering modes are named in settings
from rag.config import Mode
from rag.errors import BadRequest

MODES: tuple[str, ...] = get_args(Mode)
MODE_HELP = "Retrieval: keywords and vectors fused (hybrid), or one alone. Default RAG_RETRIEVAL_MODE."

BLANK = "must contain more than spaces"
_INVISIBLE = frozenset({"Cc", "Cf", "Zs", "Zl", "Zp"})  # controls, zero-width marks, every kind of space


def is_blank(text: str) -> bool:
    """Nothing but whitespace and invisible marks: "   ", "\\t\\n", NBSP, U+3000, a zero-width space."""
    return all(ch.isspace() or unicodedata.category(ch) in _INVISIBLE for ch in text)


def require_question(question: str) -> None:
    if is_blank(question):
        raise BadRequest(f"question: {BLANK}")


class Source(BaseModel):
    """One retrieved chunk, numbered as the chat model sees it."""

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
    # The API gives them only with `debug: true`.
    vector_score: float | None = None
    vector_rank: int | None = None
    keyword_score: float | None = None
    keyword_rank: int | None = None
    fused_score: float | None = None

    def public(self, debug: bool = False) -> dict[str, Any]:
        """As the API gives it: without the debug fields (left out, not null) unless asked for."""
        return self.model_dump(exclude=None if debug else set(DEBUG_FIELDS))


DEBUG_FIELDS = ("vector_score", "vector_rank", "keyword_score", "keyword_rank", "fused_score")


class Message(BaseModel):
    """A turn of a conversation, as OpenAI and Ollama clients send it; `content` may be a list of parts."""

    model_config = ConfigDict(extra="allow")  # images, tool calls, names: accepted and not used

    role: Literal["system", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = ""

    @property
    def text(self) -> str:
        if isinstance(self.content, list):  # OpenAI's [{"type": "text", "text": ...}, {"type": "image_url"}]
            return "\n".join(str(p.get("text", "")) for p in self.content if p.get("type") == "text")
        return self.content or ""


class Evidence(BaseModel):
    """A sentence of a source that answers the question; start/end index the extracted text, as a source's do."""

    n: int = Field(description="The source it is in.")
    text: str
    start: int | None
    end: int | None
    score: float


class Claim(BaseModel):
    """A sentence of the answer and the span of a source that supports it (none when nothing does)."""

    text: str
    supported: bool
    score: float
    source_n: int | None = Field(default=None, description="The source whose span supports it.")
    start: int | None = None
    end: int | None = None
    cited: list[int] = Field(default_factory=list, description="The [n] the sentence cites.")
    citation_ok: bool | None = Field(
        default=None, description="False when a cited source does not support the sentence; null with no citation."
    )


ANSWER_MODE_HELP = (
    "extract: the evidence sentences, no chat call; generate: the model's answer as it is; auto: the model's "
    "answer while each sentence is supported, else the evidence. Default RAG_ANSWER_MODE."
)


class Usage(BaseModel):
    """Tokens as Ollama counted them: the prompt evaluated and the answer generated (0 with no chat call)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0


class AnswerWarning(BaseModel):
    code: Literal["sources_left_out", "prompt_truncated", "history_cut"]
    message: str


class Answer(BaseModel):
    answer: str
    sources: list[Source]
    model: str
    abstained: bool
    timings_ms: dict[str, float] = Field(default_factory=dict)
    mode: Mode | None = Field(default=None, description="The retrieval mode in effect.")
    warnings: list[AnswerWarning] = Field(
        default_factory=list,
        description="What the answer may suffer from: sources left out, a prompt cut, old turns left out.",
    )
    standalone_question: str | None = Field(
        default=None, description="A follow-up rewritten to stand alone: what was searched for."
    )
    usage: Usage = Field(default_factory=Usage)
    answer_mode: AnswerMode | None = Field(default=None, description=ANSWER_MODE_HELP)
    answer_source: Literal["model", "evidence", "none"] = Field(
        default="none",
        description="model: the model's sentences (each supported, in auto mode); evidence: source sentences "
        "quoted; none: declined or no answer.",
    )
    model_answer: str | None = Field(
        default=None, description="What the model said, when the answer is not that (held back or cut)."
    )
    evidence: list[Evidence] = Field(default_factory=list, description="The source sentences that answer it.")
    claims: list[Claim] = Field(default_factory=list, description="Each sentence of the answer, checked.")

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()
