"""Tool-call repairs in evaluation (``rollout.tool_retries``): per policy and tool, how many
steps' calls failed at first, how many of those the policy tried to repair, and how many it
fixed — read from the evaluation rows' per-step repair columns."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pyarrow as pa

REPAIRS_SCHEMA = pa.schema(
    [
        pa.field("policy", pa.string(), nullable=False),
        pa.field("tool", pa.string(), nullable=False),
        pa.field("calls", pa.int64(), nullable=False),  # steps that chose the tool
        pa.field("attempted", pa.int64(), nullable=False),  # of these, failed and repaired
        pa.field("succeeded", pa.int64(), nullable=False),  # of these, the repair ran ok
        pa.field("rate", pa.float64()),  # succeeded / attempted; null where none was tried
    ]
)


def repair_table(rows: list[dict[str, Any]], tools: list[str]) -> pa.Table:
    """One row per policy x tool (``tools``: the configured tools, in order) that the policy
    called at least once; policies in the order they appear."""
    calls: Counter = Counter()
    attempted: Counter = Counter()
    succeeded: Counter = Counter()
    for row in rows:
        for action, tries, fixed in zip(
            row["actions"], row["step_repairs"], row["step_repaired"], strict=True
        ):
            key = (row["policy"], action)
            calls[key] += 1
            attempted[key] += tries > 0
            succeeded[key] += bool(fixed)
    policies = list(dict.fromkeys(r["policy"] for r in rows))
    out = [
        {
            "policy": p,
            "tool": t,
            "calls": calls[(p, t)],
            "attempted": attempted[(p, t)],
            "succeeded": succeeded[(p, t)],
            "rate": succeeded[(p, t)] / attempted[(p, t)] if attempted[(p, t)] else None,
        }
        for p in policies
        for t in tools
        if calls[(p, t)]
    ]
    return pa.Table.from_pylist(out, schema=REPAIRS_SCHEMA)


def repair_lines(table: pa.Table) -> list[str]:
    """The report's section: repaired tool calls per policy x tool (only where one was
    tried)."""
    rows = [r for r in table.to_pylist() if r["attempted"]]
    lines = [
        "",
        "## Tool-call repairs (rollout.tool_retries)",
        "",
        "| policy | tool | calls | failed, repair tried | repaired | repair rate |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['policy']} | {r['tool']} | {r['calls']} | {r['attempted']} | "
            f"{r['succeeded']} | {r['rate']:.0%} |"
        )
    if not rows:
        lines.append("| – | – | – | – | – | – |")
    return lines
