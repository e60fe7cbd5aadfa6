"""What the `rag` commands share on the terminal: settings built when a command runs, the error line with its
exit code, logging, and progress bars."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from contextvars import ContextVar
from datetime import UTC, datetime
from functools import wraps
from typing import Concatenate, NoReturn, ParamSpec, TypeVar

import click
from pydantic import ValidationError

from rag.config import Settings

P = ParamSpec("P")
R = TypeVar("R")

EXIT_ERROR = 2  # an error that stopped the command


def fail(message: str) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(EXIT_ERROR)


def progress_bar(description: str, total: int, unit: str, leave: bool = True) -> Callable[[int], None]:
    """advance(n) of a tqdm bar; disable=None: a bar on a terminal, silence in logs and pipes."""
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, desc=description, disable=None, file=sys.stderr, leave=leave).update


# The X-Request-ID of the HTTP request being served (rag.serve sets it), on every log line made for it.
request_id: ContextVar[str] = ContextVar("request_id", default="")


class RequestIdFilter(logging.Filter):
    """Stamps each record with the request it was made for (`request_id`; '' outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        rid = request_id.get()
        record.request_id = rid
        record.request = f" [request {rid}]" if rid else ""
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a line (RAG_LOG_FORMAT=json): time, level, logger, message, request_id, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if rid := getattr(record, "request_id", ""):
            entry["request_id"] = rid
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def setup_logging(level: str, verbose: bool, fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else
                         logging.Formatter("%(levelname)s %(name)s: %(message)s%(request)s"))
    logging.basicConfig(level=logging.DEBUG if verbose else getattr(logging, level), handlers=[handler])
    for noisy in ("httpx", "chromadb", "urllib3", "bm25s"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def invalid_settings(exc: ValidationError, prefix: str) -> NoReturn:
    """One error line naming each bad variable (a field read under its own name, like OLLAMA_HOST, keeps it)."""

    def variable(loc: tuple[int | str, ...]) -> str:
        name = "_".join(map(str, loc))
        return name if name.isupper() else f"{prefix}{name.upper()}"

    fail("invalid settings: " + "; ".join(f"{variable(e['loc'])}: {e['msg']}" for e in exc.errors()))


def _settings(ctx: click.Context) -> Settings:
    """The settings, built and checked once per run (an invalid one is one error line), logging set from them."""
    if "settings" not in ctx.meta:  # click shares meta between a context and its subcommands
        try:
            settings = Settings()
        except ValidationError as exc:
            invalid_settings(exc, "RAG_")
        setup_logging(settings.log_level, ctx.meta["verbose"], settings.log_format)
        ctx.meta["settings"] = settings
    return ctx.meta["settings"]  # type: ignore[no-any-return]


def pass_settings(command: Callable[Concatenate[Settings, P], R]) -> Callable[P, R]:
    """Like click.pass_obj, with the settings built when the command runs, after its options are parsed."""

    @wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        return command(_settings(click.get_current_context()), *args, **kwargs)

    return run
