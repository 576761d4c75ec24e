"""Self-refinement of failed tool calls (ToolACE-R's cheapest form): when a tool call fails, the
policy is shown the error and writes one corrected input, which runs in the sandbox again — up
to ``rollout.tool_retries`` times. Synthesis repairs before judging (the judge sees the final
input and observation); evaluation repairs at the step.

The repair prompt is the step's own state, the failed step as the assistant's turn, and the
error as the next user turn; the model writes only a new action input. Repairs are ordinary
generator calls (response cache, token accounting, the stage's cost limit) and are batched:
one generation batch and one sandbox batch per retry round, over every failed call.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from spark_core.config import RunConfig
from spark_core.models.generator import Generator
from spark_core.models.requests import ChatRequest, Message
from spark_core.protocol import COT, render_step
from spark_core.tools.base import ToolStatus
from spark_core.tools.batch import ToolCall, run_batch
from spark_core.tools.registry import discover
from spark_core.tools.sandbox import Sandbox

REPAIR_STOP = ("\nObservation", "\nThought", "\nAction")
REPAIR_QUESTION = (
    "Observation: {observation}\n"
    "That tool call failed. Write a corrected Action Input for {action} only."
)
ERROR_CHARS = 300  # the error shown to the model
# the label a server may repeat (it never sees the hf backend's "Action Input:" prefill)
_LABEL = re.compile(r"^\s*\**\s*action input\s*\**\s*:\s*\**\s*", re.IGNORECASE)

REPAIR_FIELDS = [
    pa.field("repair_attempts", pa.int32()),  # repair generations run (null: none, as 0)
    pa.field("repair_succeeded", pa.bool_()),  # a repaired input ran without error
    pa.field("failed_input", pa.string()),  # the first failed input (null: no repair)
    pa.field("failed_error", pa.string()),  # its "status: error" (null: no repair)
]
"""Columns a repaired tool call adds to its row (``candidates``); nullable so that rows written
without repairs stay valid."""


@dataclass(frozen=True)
class RepairContext:
    """What a failed call's repair prompt is built from: the policy's state and its thought."""

    messages: tuple[Message, ...]
    thought: str
    temperature: float
    seed: int


def failure_text(row: dict[str, Any]) -> str:
    text = f"{row['status']}: {row['error'] or row['output']}".strip()
    return text if len(text) <= ERROR_CHARS else text[:ERROR_CHARS] + " ..."


def repairable(row: dict[str, Any]) -> bool:
    """A failed sandboxed call of a known tool (``cot`` never fails; an unknown tool cannot
    be fixed by a new input)."""
    return row["status"] != ToolStatus.OK and row["action"] != COT and row["action"] in discover()


def repair_request(
    ctx: RepairContext, row: dict[str, Any], attempt: int, max_tokens: int
) -> ChatRequest:
    """The repair prompt for ``row``'s failed input: the state, the failed step, the error."""
    failed_step = render_step(ctx.thought, row["action"], row["tool_input"])
    question = REPAIR_QUESTION.format(observation=failure_text(row), action=row["action"])
    return ChatRequest(
        (*ctx.messages, ("assistant", failed_step), ("user", question)),
        max_new_tokens=max_tokens,
        temperature=ctx.temperature,
        seed=ctx.seed + 7919 * attempt,
        stop=REPAIR_STOP,
        prefill="Action Input:",
    )


def repair_calls(
    rows: list[dict[str, Any]],
    contexts: list[RepairContext | None],
    generator: Generator,
    sandbox: Sandbox,
    cfg: RunConfig,
) -> list[tuple[int, int]]:
    """Repair the failed calls among ``rows`` (``run_batch`` rows, updated in place) up to
    ``rollout.tool_retries`` rounds, each repair up to ``rollout.input_tokens`` long; a row
    whose context is None is never repaired. Every row gets the ``REPAIR_FIELDS``; a repaired
    row's ``tool_input``, ``status``, ``output``, ``error`` and
    ``latency_ms`` are those of its last attempt. Returns each row's repair tokens
    (prompt, completion)."""
    retries, max_tokens = cfg.rollout.tool_retries, cfg.rollout.input_tokens
    parallelism = cfg.tools.parallelism
    tokens = [(0, 0)] * len(rows)
    live = list(contexts)  # a context is dropped once its repair generation fails
    for row in rows:
        row.update(repair_attempts=0, repair_succeeded=False, failed_input=None, failed_error=None)
    for attempt in range(1, retries + 1):
        todo = [i for i, row in enumerate(rows) if live[i] is not None and repairable(row)]
        if not todo:
            break
        completions = generator.generate(
            [repair_request(live[i], rows[i], attempt, max_tokens) for i in todo]
        )
        runnable = []
        for i, completion in zip(todo, completions, strict=True):
            row = rows[i]
            if row["failed_input"] is None:
                row.update(failed_input=row["tool_input"], failed_error=failure_text(row))
            row["repair_attempts"] += 1
            prompt, written = tokens[i]
            tokens[i] = (prompt + completion.prompt_tokens, written + completion.completion_tokens)
            if completion.finish_reason == "error":  # the call failed: the row stays as it was
                live[i] = None
                continue
            runnable.append((i, _LABEL.sub("", completion.text, count=1).strip()))
        calls = [
            ToolCall(rows[i]["question_id"], rows[i]["step"], rows[i]["action"], text)
            for i, text in runnable
        ]
        for (i, _), result in zip(runnable, run_batch(calls, sandbox, parallelism), strict=True):
            rows[i].update(result)
            rows[i]["repair_succeeded"] = result["status"] == ToolStatus.OK
    return tokens
