"""Process environment for an embedded (serverless) Prefect run.

Set before Prefect is imported: Prefect reads its settings once. Values a user already set
(e.g. ``PREFECT_API_URL`` pointing at a real server) always win.
"""

from __future__ import annotations

import os
from pathlib import Path


def prefect_env(runs_dir: str | Path) -> dict[str, str]:
    home = Path(runs_dir).resolve() / ".prefect"
    return {
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        # first start migrates a fresh SQLite database: slow on a 2-core laptop
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
        "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "true",
        "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(home / "storage"),
        "PREFECT_LOGGING_LEVEL": os.environ.get("PREFECT_LOGGING_LEVEL", "INFO"),
    }


def configure_prefect_env(runs_dir: str | Path) -> None:
    for key, value in prefect_env(runs_dir).items():
        os.environ.setdefault(key, value)
    Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
