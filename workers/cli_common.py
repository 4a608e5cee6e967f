"""What every ``bottlelens`` command shares: the consoles, the one-line failure,
the thread option."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer
from rich.console import Console

# Piped output gets room for the whole table instead of rich's default 80 columns,
# unless COLUMNS says how wide.
console = Console(width=None if sys.stdout.isatty() or "COLUMNS" in os.environ else 200)
err_console = Console(stderr=True)
ThreadsOption = Annotated[
    int | None,
    typer.Option(
        min=1,
        metavar="N",
        help="Torch threads (numpy's BLAS runs one inside each). Default: "
        "OMP_NUM_THREADS, else the cores this process may use.",
    ),
]
DEMO_METRICS = "id,mi,probe,cka,attribution"


def fail(message: str) -> typer.Exit:
    # One line, however long: the terminal wraps it, a log or a grep sees it whole.
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code=2)
