"""Batched tool execution: many calls, bounded parallelism, one row per call.

A failing, hanging or hostile call only marks its own row; ``cot`` is not executed (the thought
itself is the observation).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from spark_core.tools.base import ToolResult, ToolStatus
from spark_core.tools.registry import COT, discover
from spark_core.tools.sandbox import Sandbox

TOOL_CALLS_SCHEMA = pa.schema(
    [
        pa.field("question_id", pa.int64(), nullable=False),
        pa.field("step", pa.int32(), nullable=False),
        pa.field("action", pa.string(), nullable=False),
        pa.field("tool_input", pa.string(), nullable=False),
        pa.field("status", pa.string(), nullable=False),  # ToolStatus
        pa.field("output", pa.string(), nullable=False),
        pa.field("error", pa.string(), nullable=False),
        pa.field("latency_ms", pa.float64(), nullable=False),
    ]
)
"""The tool-execution columns of the ``candidates`` artifact."""


@dataclass(frozen=True)
class ToolCall:
    question_id: int
    step: int
    action: str
    tool_input: str


def _execute(call: ToolCall, sandbox: Sandbox) -> ToolResult:
    if call.action == COT:
        return ToolResult(ToolStatus.OK, call.tool_input, "", 0.0)
    if call.action not in discover():
        return ToolResult(ToolStatus.REJECTED, "", f"unknown tool {call.action!r}", 0.0)
    if not call.tool_input.strip():
        return ToolResult(ToolStatus.ERROR, "", "empty tool input", 0.0)
    return sandbox.run(call.action, call.tool_input)


def run_batch(calls: list[ToolCall], sandbox: Sandbox, parallelism: int) -> list[dict[str, Any]]:
    """Execute ``calls`` with at most ``parallelism`` in flight; rows come back in call order."""
    with ThreadPoolExecutor(max_workers=max(1, parallelism), thread_name_prefix="tool") as pool:
        results = list(pool.map(lambda c: _execute(c, sandbox), calls))
    return [
        {
            "question_id": c.question_id,
            "step": c.step,
            "action": c.action,
            "tool_input": c.tool_input,
            **r.to_dict(),
        }
        for c, r in zip(calls, results, strict=True)
    ]


def batch_table(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=TOOL_CALLS_SCHEMA)
