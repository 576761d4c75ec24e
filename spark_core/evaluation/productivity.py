"""Tool productivity per policy and category, read from the evaluation rows: do the tool calls
pay off? (OTC, "Acting Less is Reasoning More": diversity is only good if the calls help.)

A tool call is a step whose action is a tool: not ``cot``, not ``answer`` and not ``invalid``;
the rows count them (``tool_calls``) and the ones whose observation was not ``ok``
(``tool_errors``: error, timeout or refusal). "Correct" is the report's accuracy convention
(a no-answer counts with its guess)."""

from __future__ import annotations

import math
from typing import Any

import pyarrow as pa

from spark_core.evaluation.report import OVERALL
from spark_core.evaluation.stats import accuracy

_F = pa.float64()
PRODUCTIVITY_SCHEMA = pa.schema(
    [
        pa.field("policy", pa.string(), nullable=False),
        pa.field("category", pa.string(), nullable=False),  # a category or "overall"
        pa.field("n", pa.int64(), nullable=False),  # questions
        pa.field("correct", pa.int64(), nullable=False),
        pa.field("tool_calls", pa.int64(), nullable=False),
        pa.field("tool_errors", pa.int64(), nullable=False),
        pa.field("calls_per_question", _F, nullable=False),
        pa.field("calls_per_correct", _F, nullable=False),  # inf: calls, none correct
        pa.field("tool_error_rate", _F, nullable=False),  # NaN: no tool call
        pa.field("calls_on_correct_share", _F, nullable=False),  # NaN: no tool call
        pa.field("with_tool_n", pa.int64(), nullable=False),  # questions with >= 1 tool call
        pa.field("with_tool_accuracy", _F, nullable=False),  # NaN: no such question
        pa.field("no_tool_n", pa.int64(), nullable=False),
        pa.field("no_tool_accuracy", _F, nullable=False),
    ]
)


def _ratio(num: float, den: float) -> float:
    return num / den if den else float("nan")


def _cell(policy: str, category: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    calls = sum(r["tool_calls"] for r in rows)
    errors = sum(r["tool_errors"] for r in rows)
    correct = sum(r["correct"] for r in rows)
    with_tool = [r["correct"] for r in rows if r["tool_calls"] > 0]
    no_tool = [r["correct"] for r in rows if r["tool_calls"] == 0]
    return {
        "policy": policy,
        "category": category,
        "n": len(rows),
        "correct": correct,
        "tool_calls": calls,
        "tool_errors": errors,
        "calls_per_question": _ratio(calls, len(rows)),
        "calls_per_correct": math.inf if calls and not correct else _ratio(calls, correct),
        "tool_error_rate": _ratio(errors, calls),
        "calls_on_correct_share": _ratio(sum(r["tool_calls"] for r in rows if r["correct"]), calls),
        "with_tool_n": len(with_tool),
        "with_tool_accuracy": accuracy(with_tool),
        "no_tool_n": len(no_tool),
        "no_tool_accuracy": accuracy(no_tool),
    }


def productivity(rows: list[dict[str, Any]]) -> pa.Table:
    """One row per policy (in the order they appear) x (overall, then sorted categories)."""
    out = []
    for policy in dict.fromkeys(r["policy"] for r in rows):
        mine = [r for r in rows if r["policy"] == policy]
        out.append(_cell(policy, OVERALL, mine))
        for category in sorted({r["category"] for r in mine}):
            out.append(_cell(policy, category, [r for r in mine if r["category"] == category]))
    return pa.Table.from_pylist(out, schema=PRODUCTIVITY_SCHEMA)


def _num(value: float, fmt: str) -> str:
    return "–" if math.isnan(value) else "∞" if math.isinf(value) else format(value, fmt)


def productivity_lines(table: pa.Table) -> list[str]:
    """The report's tool-productivity section: rows grouped by category (overall first) so
    the policies sit next to each other."""
    rows = table.to_pylist()
    lines = [
        "",
        "## Tool productivity",
        "",
        "A tool call is a step whose action is a tool (not `cot`, not `answer`); ∞: tool calls "
        "but no correct answer. Accuracy with and without tool calls compares questions the "
        "policy itself chose to use tools on: an observation, not a controlled experiment.",
        "",
        "| category | policy | n | tool calls / question | tool calls / correct answer | "
        "tool error rate | calls on correct answers | acc. with ≥1 tool call (n) | "
        "acc. with no tool call (n) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    categories = list(dict.fromkeys(r["category"] for r in rows if r["category"] == OVERALL))
    categories += sorted({r["category"] for r in rows} - {OVERALL})
    for category in categories:
        for r in (r for r in rows if r["category"] == category):
            lines.append(
                f"| {category} | {r['policy']} | {r['n']} | "
                f"{_num(r['calls_per_question'], '.2f')} | "
                f"{_num(r['calls_per_correct'], '.2f')} | "
                f"{_num(r['tool_error_rate'], '.1%')} | "
                f"{_num(r['calls_on_correct_share'], '.1%')} | "
                f"{_num(r['with_tool_accuracy'], '.1%')} ({r['with_tool_n']}) | "
                f"{_num(r['no_tool_accuracy'], '.1%')} ({r['no_tool_n']}) |"
            )
    return lines


def overall_records(table: pa.Table) -> list[dict[str, Any]]:
    """The overall rows for a Prefect table artifact, which is JSON: ∞ as text, NaN as None."""

    def clean(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return None if math.isnan(value) else "∞"
        return value

    return [
        {k: clean(v) for k, v in r.items()} for r in table.to_pylist() if r["category"] == OVERALL
    ]
