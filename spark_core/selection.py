"""Which candidate a step keeps: the rarity-first rule and its ablations.

viable = judge score >= threshold. ``rarity_first`` (the paper): among viable candidates take
the least-used action so far, ties broken by the lower score, then by name. ``lowest_viable``:
the lowest-scoring viable candidate. ``greedy``: the highest score. If nothing is viable, the
highest score wins and the pick is recorded as a fallback. Usage counts are global: callers
select questions in a fixed order and count each pick before the next, so the result is
deterministic.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Literal

Strategy = Literal["rarity_first", "lowest_viable", "greedy"]


@dataclass(frozen=True)
class Pick:
    action: str
    score: float
    viable: bool  # False: nothing reached the threshold and this is the fallback
    usage_before: int  # how often the action had been chosen before this pick


def select(
    scores: dict[str, float | None],
    usage: Counter,
    strategy: Strategy = "rarity_first",
    threshold: float = 6.0,
) -> Pick:
    """Pick one action from ``scores`` (action -> judge score; None = failed judgement)."""
    judged = {a: s for a, s in scores.items() if s is not None}
    if not judged:
        raise ValueError("no candidate has a judge score")
    viable = {a: s for a, s in judged.items() if s >= threshold}
    if not viable:
        action = min(judged, key=lambda a: (-judged[a], a))
        return Pick(action, judged[action], False, usage[action])
    if strategy == "rarity_first":
        action = min(viable, key=lambda a: (usage[a], viable[a], a))
    elif strategy == "lowest_viable":
        action = min(viable, key=lambda a: (viable[a], a))
    elif strategy == "greedy":
        action = min(viable, key=lambda a: (-viable[a], a))
    else:
        raise ValueError(f"unknown selection strategy {strategy!r}")
    return Pick(action, viable[action], True, usage[action])


def select_in_order(
    table: list[tuple[int, dict[str, float | None]]],
    usage: Counter,
    strategy: Strategy = "rarity_first",
    threshold: float = 6.0,
) -> list[tuple[int, Pick]]:
    """Select for many questions in ascending question_id order, counting each pick in
    ``usage`` before the next — the barrier step over all shards."""
    picks = []
    for question_id, scores in sorted(table, key=lambda row: row[0]):
        pick = select(scores, usage, strategy, threshold)
        usage[pick.action] += 1
        picks.append((question_id, pick))
    return picks
