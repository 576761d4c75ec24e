"""Rich progress bars for the stages a CLI command runs in this process.

Every ``spark_core.progress`` event gets a bar. Prefect's console log lines are printed through
the same rich console while the bars are live, so they scroll above the bars instead of
tearing them; the API log handler (what the Prefect UI shows) is untouched.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from spark_core.progress import subscribed


@contextmanager
def _console_logs_through(console: Console) -> Iterator[None]:
    from prefect.logging.handlers import PrefectConsoleHandler

    swapped = []
    for handler in logging.getLogger().handlers:
        if isinstance(handler, PrefectConsoleHandler) and hasattr(handler, "console"):
            swapped.append((handler, handler.console))
            handler.console = console
    try:
        yield
    finally:
        for handler, original in swapped:
            handler.console = original


@contextmanager
def stage_progress(console: Console) -> Iterator[None]:
    """Show a bar per stage (and per trainer / evaluated policy) until the block ends."""
    bars = Progress(
        SpinnerColumn(),
        TextColumn("{task.description:<28}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )
    tasks: dict[str, int] = {}

    def on_event(what: str, done: float, total: float) -> None:
        if what not in tasks:
            tasks[what] = bars.add_task(what, total=total)
        bars.update(tasks[what], completed=done, total=total)

    with bars, _console_logs_through(bars.console), subscribed(on_event):
        yield
