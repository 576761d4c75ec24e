"""The tool registry: every ``Tool`` defined in a module of this package, plus third-party
tools registered under the ``spark.tools`` entry-point group.

Adding a tool is one new file here that defines ``TOOL = Tool(...)``; a package outside this
repository declares ``[project.entry-points."spark.tools"] name = "module:TOOL"``.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import lru_cache
from importlib.metadata import entry_points

from spark_core.tools.base import Tool

ENTRY_POINT_GROUP = "spark.tools"
COT = "cot"
COT_DESCRIPTION = "No tool: reason step by step in the thought itself."


@lru_cache(maxsize=1)
def discover() -> dict[str, Tool]:
    """All tools by name: built-in modules first (in file order), then entry points."""
    import spark_core.tools as package

    tools: dict[str, Tool] = {}
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        tool = getattr(module, "TOOL", None)
        if isinstance(tool, Tool):
            tools[tool.name] = tool
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        tool = ep.load()
        if not isinstance(tool, Tool):
            raise TypeError(f"entry point {ep.name!r} ({ep.value}) is not a spark Tool")
        if tool.name in tools:
            raise ValueError(f"entry point {ep.value} redefines tool {tool.name!r}")
        tools[tool.name] = tool
    if COT in tools:
        raise ValueError(f"{COT!r} is reserved for chain-of-thought")
    return tools


def get_tool(name: str) -> Tool:
    tools = discover()
    if name not in tools:
        raise KeyError(f"unknown tool {name!r}; known: {', '.join(sorted(tools))}")
    return tools[name]


def action_names() -> list[str]:
    """Every candidate action: the tools, then chain-of-thought."""
    return [*discover(), COT]
