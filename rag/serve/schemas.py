"""The HTTP request and response models. Sources and answers are the domain's own (rag.answer.models)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, Field, model_validator
from pydantic_core import PydanticCustomError

from rag.answer.conversation import split
from rag.answer.models import (
    ANSWER_MODE_HELP,
    BLANK,
    MODE_HELP,
    Answer,
    AnswerMode,
    Message,
    Mode,
    Source,
    is_blank,
)

DEBUG_HELP = "Give each source its vector, keyword and fused scores and ranks."


def _not_blank(question: str) -> str:
    if is_blank(question):
        raise PydanticCustomError("blank", BLANK)
    return question


Question = Annotated[
    str,
    Field(min_length=1, max_length=4000, description="The question, in any language; not only spaces."),
    AfterValidator(_not_blank),
]


class RetrieveRequest(BaseModel):
    question: Question
    top_k: int | None = Field(default=None, ge=1, le=50, description="Chunks to retrieve.")
    mode: Mode | None = Field(default=None, description=MODE_HELP)
    debug: bool = Field(default=False, description=DEBUG_HELP)


MAX_MESSAGES = 200


class AskRequest(BaseModel):
    question: Question | None = Field(default=None, description="The question; or the last user turn of `messages`.")
    messages: list[Message] | None = Field(
        default=None, max_length=MAX_MESSAGES,
        description="The conversation so far ([{role, content}], oldest first): a follow-up is rewritten to stand "
        "alone before retrieval. Without `question`, its last message is the user's question.",
    )
    top_k: int | None = Field(default=None, ge=1, le=50, description="Chunks to retrieve.")
    mode: Mode | None = Field(default=None, description=MODE_HELP)
    debug: bool = Field(default=False, description=DEBUG_HELP)
    stream: bool = Field(default=False, description="Answer as NDJSON: sources, tokens, then timings.")
    answer_mode: AnswerMode | None = Field(default=None, description=ANSWER_MODE_HELP)

    @model_validator(mode="after")
    def _asks_something(self) -> AskRequest:
        if self.question is None and not self.messages:
            raise ValueError("give `question`, or `messages` ending with the user's question")
        return self

    def turns(self) -> tuple[str, list[Message]]:
        """(question, history): `question` after all of `messages`, or the last of `messages`."""
        if self.question is not None:
            return self.question, list(self.messages or [])
        return split(self.messages or [])


AskResponse = Answer


class RetrieveResponse(BaseModel):
    sources: list[Source]
    mode: Mode | None = Field(default=None, description="The retrieval mode in effect.")


class DocumentOut(BaseModel):
    source: str
    chunks: int


class DocumentsResponse(BaseModel):
    documents: list[DocumentOut]
    total_chunks: int


class ChunkSpan(BaseModel):
    chunk_id: str
    start: int
    end: int


class PageTextResponse(BaseModel):
    source: str
    page: int | None
    text: str = Field(description="The page as extracted; a source's start/end index it.")
    chunks: list[ChunkSpan]


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorBody


ERRORS: dict[int | str, dict[str, Any]] = {
    403: {"model": ErrorResponse, "description": "A Host header this server does not answer to"},
    409: {"model": ErrorResponse, "description": "Embedding model mismatch, or nothing indexed"},
    422: {"model": ErrorResponse, "description": "Bad input"},
    503: {"model": ErrorResponse, "description": "Ollama unreachable, or a model not pulled"},
}
