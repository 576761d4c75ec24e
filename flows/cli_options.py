"""What every ``spark`` command shares: the ``--config``/``--set`` options, the config they
load, the consoles it prints to and how it fails. The command modules (``cli.py``,
``cli_check.py``) import it; it imports none of them."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from spark_core.config import ConfigError, RunConfig, load_config
from spark_core.runtime import configure_prefect_env

console = Console()
err_console = Console(stderr=True)

ConfigOpt = Annotated[str | None, typer.Option("--config", "-c", help="Run config preset (YAML).")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        "-s",
        help="Override a field: section.key=value or section.group.key=value (repeatable).",
    ),
]


def fail(message: str) -> None:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code=2)


def load_run_config(config: str | None, overrides: list[str] | None) -> RunConfig:
    try:
        cfg = load_config(config, overrides or [])
    except ConfigError as exc:
        fail(str(exc))
    configure_prefect_env(cfg.runtime.runs_dir)
    return cfg
