"""What the `rag` commands share on the terminal: the error line with its exit code, and progress bars."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import NoReturn

import click

EXIT_ERROR = 2  # an error that stopped the command


def fail(message: str) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(EXIT_ERROR)


def progress_bar(description: str, total: int, unit: str, leave: bool = True) -> Callable[[int], None]:
    """advance(n) of a tqdm bar; disable=None: a bar on a terminal, silence in logs and pipes."""
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, desc=description, disable=None, file=sys.stderr, leave=leave).update
