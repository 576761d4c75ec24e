"""The task runner a stage's parallel work goes through, chosen by ``runtime.task_runner``.

A stage flow opens the runner itself (``with task_runner_for(cfg) as runner``), so the choice
follows the run config wherever the flow runs: ``spark run``, a deployment, a worker.
"""

from __future__ import annotations

import os

from prefect.context import FlowRunContext
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from spark_core.config import RunConfig


def _api_url() -> str | None:
    """The API the current flow run reports to. Without PREFECT_API_URL Prefect serves an
    ephemeral API from a subprocess of this one; Dask workers must report to that same API
    rather than each starting their own."""
    if os.environ.get("PREFECT_API_URL"):
        return os.environ["PREFECT_API_URL"]
    ctx = FlowRunContext.get()
    if ctx is None or ctx.client is None:
        return None
    return str(ctx.client.api_url)


def _result_storage() -> str:
    """Where this process persists task results; workers must persist to the same place."""
    from prefect.settings import get_current_settings

    return str(get_current_settings().results.local_storage_path)


def task_runner_for(cfg: RunConfig, threads: int | None = None) -> TaskRunner:
    """A fresh, unstarted runner: threads (default; ``threads`` caps them for tasks that share
    one in-process model) or Dask (a running scheduler, or a temporary local cluster of
    ``max_workers`` single-threaded worker processes, each with its own models)."""
    runtime = cfg.runtime
    if runtime.task_runner == "threads":
        return ThreadPoolTaskRunner(max_workers=threads or runtime.max_workers)
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError as exc:
        raise RuntimeError(
            "runtime.task_runner=dask needs prefect-dask: pip install 'spark-pipeline[dask]'"
        ) from exc
    if runtime.dask_address:
        return DaskTaskRunner(address=runtime.dask_address)
    env = {"PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(_result_storage())}
    if url := _api_url():
        env["PREFECT_API_URL"] = url
    return DaskTaskRunner(
        cluster_kwargs={
            "n_workers": runtime.max_workers,
            "threads_per_worker": 1,
            "processes": True,
            "host": "127.0.0.1",
            "dashboard_address": None,
            "env": env,
        }
    )
