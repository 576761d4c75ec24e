"""Thought-action agreement: does the selected step's thought name the tool it ends up using?

With ``rollout.thoughts: shared`` the 9 candidates of a step share one thought, written before
any action is fixed, so a rarity-aware selection can train on "Thought: ... use the calculator ...
Action: chemistry". This measures how often. A thought *names* a tool when the tool's name
appears as a word, with its underscore written as a space or not ("symbolic math",
"unit_converter"); ``cot`` has no name to look for. Loose aliases ("math", "search") are not
counted: in free text they are more often subjects than tools.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from spark_core.protocol import COT


def _pattern(tool: str) -> re.Pattern[str]:
    words = [re.escape(w) for w in tool.split("_")]
    return re.compile(r"\b" + r"[\s_-]?".join(words) + r"\b", re.IGNORECASE)


def tools_named(thought: str, actions: Sequence[str]) -> set[str]:
    """The tools among ``actions`` whose names appear in ``thought``."""
    return {a for a in actions if a != COT and _pattern(a).search(thought)}


def agreement(steps: Iterable[tuple[str, str]], actions: Sequence[str]) -> dict[str, float]:
    """Over (thought, selected action) pairs: the share of steps whose thought names any tool,
    and the share whose thought names tools but not the selected action (a mismatch)."""
    n = named = mismatched = 0
    for thought, action in steps:
        n += 1
        names = tools_named(thought, actions)
        named += bool(names)
        mismatched += bool(names) and action not in names
    return {
        "steps": n,
        "names_a_tool_rate": named / n if n else 0.0,
        "mismatch_rate": mismatched / n if n else 0.0,
    }
