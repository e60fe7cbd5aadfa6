"""Request bodies of Ollama's API as the engine reads them, and the Ollama-shaped error they raise."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from rag.engine.protocol import Sampling

T = TypeVar("T", bound=BaseModel)


class ApiError(Exception):
    """Answered as Ollama does: `{"error": message}` with an HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = ""

    @model_validator(mode="before")
    @classmethod
    def _name_is_model(cls, data: Any) -> Any:
        # Older clients send "name" (pull, show, delete); Ollama still accepts it.
        if isinstance(data, dict) and not data.get("model") and isinstance(data.get("name"), str):
            return {**data, "model": data["name"]}
        return data


class Options(BaseModel):
    """The options the engine honours; unknown ones are ignored, as Ollama does."""

    model_config = ConfigDict(extra="ignore")

    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    typical_p: float | None = None
    repeat_penalty: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    seed: int | None = None
    num_predict: int | None = None
    num_ctx: int | None = None
    stop: list[str] | str | None = None

    def sampling(self) -> Sampling:
        given = self.model_dump(exclude_none=True, exclude={"num_ctx", "stop"})
        stop = [self.stop] if isinstance(self.stop, str) else (self.stop or [])
        return Sampling(**given, stop=tuple(stop))


class _Generating(_Request):
    stream: bool = True
    format: str | dict[str, Any] | None = None
    options: Options = Field(default_factory=Options)
    keep_alive: float | str | None = None
    think: bool | str | None = None

    @model_validator(mode="before")
    @classmethod
    def _null_options(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("options") is None:
            return {k: v for k, v in data.items() if k != "options"}
        return data


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: str
    content: str | None = ""
    images: list[Any] | None = None


class ChatRequest(_Generating):
    messages: list[Message] = Field(default_factory=list)
    tools: list[Any] | None = None


class GenerateRequest(_Generating):
    prompt: str = ""
    suffix: str = ""
    system: str | None = None
    raw: bool = False
    images: list[Any] | None = None


class EmbedRequest(_Request):
    input: Any = None
    truncate: bool = True
    options: dict[str, Any] | None = None
    keep_alive: float | str | None = None
    dimensions: int | None = None


class EmbeddingsRequest(_Request):
    prompt: str = ""
    keep_alive: float | str | None = None


class ShowRequest(_Request):
    verbose: bool = False


class PullRequest(_Request):
    stream: bool = True


def parse_body(body: bytes, model: type[T]) -> T:
    """Validate a request body into `model`, answering 400 in Ollama's words when it is not usable."""
    if not body.strip():
        raise ApiError(400, "missing request body")
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise ApiError(400, f"invalid JSON in request body: {exc}") from None
    if not isinstance(data, dict):
        raise ApiError(400, "request body must be a JSON object")
    try:
        request = model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise ApiError(400, f"invalid {where or 'request'}: {first['msg']}") from None
    if isinstance(request, _Request) and not request.model:
        raise ApiError(400, "model is required")
    return request
