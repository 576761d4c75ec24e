"""What a tool is, and what running one returns.

A tool maps the text a model wrote to a deterministic text output. Failure is data: a result
carries a ``ToolStatus`` (ok / error / timeout / rejected), never an exception out of the stage.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from spark_core.str_enum import StrEnum


class ToolStatus(StrEnum):
    """How a tool call ended: the ``status`` column of tool calls (``candidates``)."""

    OK = "ok"  # the output is the tool's
    ERROR = "error"  # the tool failed on the input (the error tells the model why)
    TIMEOUT = "timeout"  # the call ran past its CPU or wall-time limit
    REJECTED = "rejected"  # the sandbox or the tool refused it (unsafe, unknown tool)


class ToolError(ValueError):
    """The input could not be used; the message tells the model what went wrong."""


class Rejected(ToolError):
    """The input asks for something the tool refuses to do (unsafe or unbounded)."""


@dataclass(frozen=True)
class ToolResult:
    status: ToolStatus
    output: str
    error: str
    latency_ms: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Tool:
    """A tool: ``run`` executes inside the sandbox; ``prepare`` warms it up in the worker
    (imports, indexes) once, before any call is forked."""

    name: str
    description: str
    input_format: str
    run: Callable[[str], str]
    prepare: Callable[[dict[str, Any]], None] | None = None
    example: str = ""

    def prompt_line(self) -> str:
        return f"{self.name}: {self.description} Input: {self.input_format}"
