"""`rag eval`: offline evaluation runs (placeholder until the evaluation lands)."""

from __future__ import annotations

import click


@click.group()
def eval_group() -> None:
    """Evaluate faithfulness and retrieval quality offline."""
