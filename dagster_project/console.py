"""What the CLI prints: rich tables, progress bars with an ETA, and errors on stderr.

Everything goes through here so that every command looks the same and none prints Dagster's
event log (that stays in the instance and the UI; ``--verbose`` lets it through).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Sequence
from typing import NoReturn

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)  # an error is one grep-able line


def fail(message: str) -> NoReturn:
    """A usage error: the message on stderr, exit code 2, nothing written."""
    err.print(Text.assemble(("error:", "bold red"), " ", message))
    sys.exit(2)


PIPE_WIDTH = 1000  # output to a file or a pipe: one table row per line, for grep and friends


def table(rows: Iterable[Sequence], header: Sequence[str], title: str | None = None) -> None:
    """A table that fits the terminal, or rows unwrapped when the output is not a terminal."""
    grid = Table(*header, title=title, title_justify="left", header_style="bold")
    for row in rows:
        grid.add_row(*(Text(str(c)) for c in row))  # cells are data, never markup
    wide = Console(highlight=False, width=PIPE_WIDTH)  # rich caps a print at the console width
    (out if out.is_terminal else wide).print(grid)


def progress() -> Progress:
    """A progress bar: description, bar, done/total, elapsed, ETA."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[note]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=err,
        transient=False,
    )


def _errors_only(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.ERROR


def quiet_dagster(verbose: bool) -> str:
    """Keep Dagster's console loggers to errors unless ``verbose``; the console log level to
    give runs. A filter, not a level: Dagster sets its ``dagster`` logger's level to INFO
    whenever it builds a sensor's logger."""
    logger = logging.getLogger("dagster")
    if verbose:
        logger.removeFilter(_errors_only)
        return "DEBUG"
    logger.addFilter(_errors_only)
    return "ERROR"
