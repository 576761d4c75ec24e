"""Tool execution task: a batch of tool calls -> one ``candidates``-schema row per call."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task

from spark_core.config import RunConfig
from spark_core.tools.batch import ToolCall, run_batch
from spark_core.tools.sandbox import SandboxLimits, shared_sandbox


def sandbox_for(cfg: RunConfig):
    tools = cfg.tools
    return shared_sandbox(
        SandboxLimits.from_config(tools), {"corpus": tools.corpus}, tools.parallelism
    )


@task(name="execute-tools")
def execute_tools(cfg: RunConfig, calls: list[ToolCall]) -> list[dict[str, Any]]:
    """Run a batch of tool calls in the sandbox with bounded parallelism."""
    rows = run_batch(calls, sandbox_for(cfg), cfg.tools.parallelism)
    by_status: dict[str, int] = {}
    for row in rows:
        by_status[row["status"]] = by_status.get(row["status"], 0) + 1
    get_run_logger().info("executed %d tool calls: %s", len(rows), by_status)
    return rows
