"""The OpenAI-compatible endpoints: `/v1/models` and `/v1/chat/completions`, so an OpenAI SDK script, Open WebUI
or Continue can use the documents as a model. The answer is `/ask`'s: retrieval from the whole conversation,
numbered citations in the text, a Sources block at the end, and the source objects in a `sources` field."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from rag.answer.conversation import split
from rag.answer.models import Answer, Message, Source
from rag.config import Settings
from rag.errors import RagError
from rag.serve.chat import extra_fields, require_model, sources_block
from rag.serve.disconnect import CancellingStream, while_connected
from rag.serve.routes import Pipeline
from rag.serve.schemas import MAX_MESSAGES

router = APIRouter(prefix="/v1", tags=["OpenAI-compatible"])


class ChatCompletionRequest(BaseModel):
    """OpenAI's request; sampling fields (temperature, max_tokens, ...) are accepted and not used: the
    service's own settings decide how its model answers."""

    model_config = ConfigDict(extra="allow")

    model: str
    messages: list[Message] = Field(min_length=1, max_length=MAX_MESSAGES)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    top_k: int | None = Field(default=None, ge=1, le=50, description="Not OpenAI's: chunks to retrieve.")


@router.get("/models")
def models(pipeline: Pipeline) -> dict[str, Any]:
    """The one model this service offers: the indexed documents, under RAG_MODEL_NAME."""
    name = pipeline.settings.model_name
    return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "ollama-rag"}]}


@router.post("/chat/completions")
async def chat_completions(body: ChatCompletionRequest, request: Request, pipeline: Pipeline) -> Any:
    """Retrieval + generation from the conversation; `stream: true` as Server-Sent Events ending in [DONE]."""
    require_model(pipeline.settings, body.model)
    question, history = split(body.messages)
    reply = _Reply(body.model)
    if body.stream:
        events = pipeline.aask_stream(question, body.top_k, None, history)
        first = await while_connected(request, anext(events))  # errors before any output keep their status
        usage = bool((body.stream_options or {}).get("include_usage"))
        stream = _sse(reply, question, first, events, pipeline.settings, usage)
        return CancellingStream(stream, media_type="text/event-stream")
    answer = await while_connected(request, pipeline.aask(question, body.top_k, None, history))
    return reply.completion(answer, answer.answer + sources_block(answer.sources, question, pipeline.settings))


class _Reply:
    """One completion's id, time and model, the same on every chunk of it."""

    def __init__(self, model: str) -> None:
        self.id, self.created, self.model = f"chatcmpl-{uuid.uuid4().hex}", int(time.time()), model

    def head(self, kind: str = "chat.completion.chunk") -> dict[str, Any]:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model}

    def completion(self, answer: Answer, content: str) -> dict[str, Any]:
        message = {"role": "assistant", "content": content}
        return {
            **self.head("chat.completion"),
            "choices": [{"index": 0, "message": message, "finish_reason": "stop", "logprobs": None}],
            "usage": _usage(answer.usage.prompt_tokens, answer.usage.completion_tokens),
            **extra_fields(answer.sources, answer.standalone_question),
        }

    def chunk(self, delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        return _event({**self.head("chat.completion.chunk"), "choices": [choice], **extra})


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _event(data: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


async def _sse(
    reply: _Reply, question: str, first: dict[str, Any], events: AsyncGenerator[dict[str, Any], None],
    settings: Settings, include_usage: bool,
) -> AsyncIterator[bytes]:
    sources: list[Source] = first["sources"]
    try:
        yield reply.chunk({"role": "assistant", "content": ""})
        async for event in events:
            if event["type"] == "token":
                yield reply.chunk({"content": event["text"]})
            elif event["type"] == "done":
                if block := sources_block(sources, question, settings):
                    yield reply.chunk({"content": block})
                yield reply.chunk({}, "stop", **extra_fields(sources, first.get("standalone_question")))
                if include_usage:  # as OpenAI sends it: a last chunk with no choices
                    counts = event["usage"]
                    usage = _usage(counts["prompt_tokens"], counts["completion_tokens"])
                    yield _event({**reply.head(), "choices": [], "usage": usage})
        yield b"data: [DONE]\n\n"
    except RagError as exc:
        # Headers are gone already: the error goes as an event, which OpenAI's clients raise.
        yield _event({"error": {"message": exc.message, "type": "server_error", "code": exc.code}})
    finally:
        await events.aclose()  # closes the request to Ollama when the client leaves early
