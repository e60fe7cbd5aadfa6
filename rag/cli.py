"""The `rag` command: ingest, ask, serve, status, check, engine, eval.

Each command builds the settings it needs when it runs (so `--help` and `--version` work whatever the
environment holds) and configures logging from them.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import click
from pydantic import ValidationError

from rag.answer.models import MODE_HELP, MODES
from rag.config import Settings
from rag.console import EXIT_ERROR, fail, invalid_settings, pass_settings, progress_bar, setup_logging
from rag.errors import RagError
from rag.eval.cli import eval_group

EXIT_OK, EXIT_FILES_FAILED = 0, 1
P = ParamSpec("P")
R = TypeVar("R")


@click.group()
@click.version_option(prog_name="rag")  # the installed distribution's version, via importlib.metadata
@click.option("-v", "--verbose", is_flag=True, help="Log debug details to stderr.")
@click.pass_context
def main(ctx: click.Context, verbose: bool) -> None:
    """Offline-first question answering over your documents, with Ollama models."""
    ctx.meta["verbose"] = verbose


def _progress(total: int) -> Callable[[int], None]:
    return progress_bar("ingest", total, "file")


@main.command()
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--dry-run", is_flag=True, help="Print what would change; touch nothing.")
@click.option("--rebuild", is_flag=True, help="Drop the index and ingest everything again.")
@click.option(
    "--reindex-keywords", is_flag=True, help="Rebuild the keyword index from the stored chunks (no embedding)."
)
@click.option(
    "--follow-symlinks", is_flag=True,
    help="Include what symbolic links inside FOLDER point to; links out of FOLDER are never followed.",
)
@click.option("--via-server", "server", default=None, metavar="URL",
              help="Have the running `rag serve` at URL sync its documents folder (POST /sync, admin key from "
              "RAG_ADMIN_KEYS) instead of writing the store from here.")
@pass_settings
def ingest(
    settings: Settings, folder: Path, dry_run: bool, rebuild: bool, reindex_keywords: bool, follow_symlinks: bool,
    server: str | None,
) -> None:
    """Sync FOLDER (PDF, Markdown, text, HTML) into the index: only what changed is embedded."""
    from ingest.run import ingest_folder

    if server:
        from rag.serve.remote import sync_via_server

        try:
            failed = sync_via_server(server, settings, folder, click.echo)
        except RagError as exc:
            fail(exc.message)
        sys.exit(EXIT_FILES_FAILED if failed else EXIT_OK)
    try:
        result = ingest_folder(
            folder, settings, dry_run=dry_run, rebuild=rebuild, reindex_keywords=reindex_keywords,
            follow_symlinks=follow_symlinks, progress_factory=_progress,
        )
    except RagError as exc:
        fail(exc.message)
    plan, summary = result.plan, result.summary
    if summary is None:
        for line in plan.lines() or ["nothing to do"]:
            click.echo(line)
        for _source, reason in plan.unreadable:
            click.echo(f"skip: {reason}", err=True)
        click.echo(f"dry run: {len(plan.unchanged)} unchanged, {len(plan.skipped)} skipped; nothing was changed")
        return
    for _source, reason in summary.failures:
        click.echo(f"failed: {reason}", err=True)
    click.echo(
        f"files: {summary.added} added, {summary.updated} updated, {summary.renamed} renamed, "
        f"{summary.unchanged} unchanged, {summary.deleted} deleted, {summary.failed} failed, "
        f"{summary.skipped} skipped; chunks: {summary.chunks_written} written, "
        f"{summary.chunks_reused} reused; embedding calls: {summary.embed_calls}; "
        f"{summary.seconds:.1f}s"
    )
    sys.exit(EXIT_FILES_FAILED if summary.failures else EXIT_OK)


def _print_answer(answer: dict[str, Any]) -> None:
    click.echo(answer["answer"])
    if answer["sources"]:
        click.echo("\nSources:")
    for s in answer["sources"]:
        page = f", page {s['page']}" if s.get("page") else ""
        click.echo(f"  [{s['n']}] {s['source']}{page} (score {s['score']:.2f})")


@main.command()
@click.argument("question")
@click.option("--top-k", type=int, default=None, help="Chunks to retrieve.")
@click.option("--url", default=None, help="Ask a running `rag serve` (e.g. http://127.0.0.1:8080).")
@click.option("--json", "as_json", is_flag=True, help="Print the whole JSON answer.")
@click.option("--mode", type=click.Choice(MODES), default=None, help=MODE_HELP)
@pass_settings
def ask(
    settings: Settings, question: str, top_k: int | None, url: str | None, as_json: bool, mode: str | None
) -> None:
    """Answer QUESTION from the indexed documents, with numbered sources."""
    from rag.answer.askers import client_key, http_asker, local_asker

    try:
        with (http_asker(url, top_k, mode, timeout=600, key=client_key(settings)) if url
              else local_asker(settings, top_k, mode, "rag ask")) as asker:
            answer = asker(question)
    except RagError as exc:
        fail(exc.message)
    if as_json:
        click.echo(json.dumps(answer, ensure_ascii=False, indent=2))
    else:
        _print_answer(answer)


@main.command()
@click.option("--host", default=None, help="Address to listen on (default RAG_HOST, 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default RAG_PORT, 8080).")
@click.option("--watch", "watch_dir", type=click.Path(path_type=Path, exists=True, file_okay=False), default=None,
              help="Sync this folder whenever a file in it changes (debounced by RAG_WATCH_DEBOUNCE).")
@click.option("--insecure-no-auth", is_flag=True,
              help="Listen beyond loopback with no API key: an open API, on purpose (logged as a warning).")
@pass_settings
def serve(
    settings: Settings, host: str | None, port: int | None, watch_dir: Path | None, insecure_no_auth: bool
) -> None:
    """Serve the HTTP API (/ask, /retrieve, /documents, /health; docs at /docs)."""
    import uvicorn

    from rag.serve.app import create_app

    # The app is told where it listens: its Host check accepts that name, and it refuses an open API beyond
    # loopback.
    update: dict[str, Any] = {"host": host or settings.host, "port": port or settings.port}
    if watch_dir is not None:
        update.update(docs_dir=watch_dir, watch=True)
    if insecure_no_auth:
        update["insecure_no_auth"] = True
    settings = settings.model_copy(update=update)
    try:
        app = create_app(settings)
    except RagError as exc:
        fail(exc.message)
    # log_config=None: uvicorn's own lines go through our logging (request ids, RAG_LOG_FORMAT=json).
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level.lower(), log_config=None)


@main.command()
@pass_settings
def status(settings: Settings) -> None:
    """What is indexed, and whether Ollama and both models are there."""
    from ingest.manifest import Manifest
    from rag import ollama

    manifest = Manifest.load(settings.manifest_path)
    click.echo(f"storage:     {settings.storage_dir}" + (f" (Chroma server {settings.chroma_host}:"
                                                        f"{settings.chroma_port})" if settings.chroma_host else ""))
    chunks = sum(len(e.chunk_ids) for e in manifest.files.values())
    click.echo(f"indexed:     {len(manifest.files)} files, {chunks} chunks")
    click.echo(f"embeddings:  {manifest.embed_model or '-'} ({manifest.embed_dim or '-'} dimensions)")
    _keyword_status(settings)
    click.echo(f"ollama:      {settings.ollama_url}")
    try:
        missing = ollama.missing_models(settings)
    except RagError as exc:
        click.echo(f"  unreachable: {exc.message}")
        sys.exit(EXIT_ERROR)
    for model in (settings.chat_model, settings.embed_model):
        click.echo(f"  {model}: " + ("missing; run: ollama pull " + model if model in missing else "present"))
    if failure := ollama.generation_failure(settings):
        click.echo(f"  cannot generate: {failure}")
    sys.exit(EXIT_ERROR if missing or failure else EXIT_OK)


def _keyword_status(settings: Settings) -> None:
    from rag.index.bm25 import KeywordIndex

    keywords = KeywordIndex.open(settings)
    mode = settings.retrieval_mode if keywords.available else "vector"
    click.echo(f"keywords:    {keywords.state}, {keywords.chunks} chunks; retrieval mode {mode}")
    if keywords.message:
        click.echo(f"  {keywords.message}")


@main.command()
@click.option("--repair", is_flag=True, help="Make them agree: drop chunks no file owns, fill in missing ones.")
@pass_settings
def check(settings: Settings, repair: bool) -> None:
    """Check that Chroma, the keyword index and the manifest hold the same chunks; exit 1 when they do not."""
    from ingest.reconcile import check_store

    try:
        result = check_store(settings, fix=repair)
    except RagError as exc:
        fail(exc.message)
    for line in result.before.lines():
        click.echo(line)
    for done in result.repairs:
        click.echo(f"repaired:  {done}")
    if result.after is not None:
        click.echo("after repair:")
        for line in result.after.lines():
            click.echo(f"  {line}")
    if result.agree:
        click.echo("ok: Chroma, the chunk texts, the keyword index and the manifest agree")
        sys.exit(EXIT_OK)
    click.echo("they disagree" + ("" if repair else "; fix it with: rag check --repair"))
    sys.exit(EXIT_FILES_FAILED)


class EngineCommand(click.Command):
    """`rag engine --help` ends with the variables the engine reads, listed from EngineSettings itself."""

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        from rag.engine.config import EngineSettings

        with formatter.section("Environment"):
            formatter.write_dl(EngineSettings.variables())


@main.command(cls=EngineCommand)
@click.pass_context
def engine(ctx: click.Context) -> None:
    """Run the bundled local engine: Ollama's HTTP API with smollm2:135m and all-minilm, offline.

    It reads only its own settings (below), not the RAG_* ones of the other commands."""
    from rag.engine.config import EngineSettings
    from rag.engine.selfcheck import SelfCheckFailed
    from rag.engine.server import serve_engine

    try:
        settings = EngineSettings()
    except ValidationError as exc:
        invalid_settings(exc, "RAG_ENGINE_")
    setup_logging(settings.log_level, ctx.meta["verbose"])
    try:
        serve_engine(settings)
    except SelfCheckFailed as exc:
        fail(str(exc))


main.add_command(eval_group, "eval")
