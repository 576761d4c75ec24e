"""What the in-process benches share: a run config from ``--config``/``--set`` against a fresh,
temporary run folder (its own Prefect database and response cache), with Prefect kept quiet."""

from __future__ import annotations

import argparse
import os
import tempfile

from spark_core.config import RunConfig, load_config
from spark_core.runtime import configure_prefect_env


def fresh_run(
    defaults: tuple[str, ...] = (), flags: dict[str, str] | None = None
) -> tuple[RunConfig, argparse.Namespace]:
    """The config and the parsed command line; ``defaults`` are overrides ``--set`` may change;
    ``flags``: the bench's own on/off options (name: help)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--set", action="append", default=[], help="section.key=value")
    for name, text in (flags or {}).items():
        parser.add_argument(name, action="store_true", help=text)
    args = parser.parse_args()
    runs = tempfile.mkdtemp(prefix="spark-bench-")
    cfg = load_config(args.config, [*defaults, *args.set, f"runtime.runs_dir={runs}"])
    configure_prefect_env(runs)
    os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
    return cfg, args
