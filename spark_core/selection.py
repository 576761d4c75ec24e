"""Which candidate a step keeps: the rarity-first rule and its ablations.

viable = judge score >= threshold. ``rarity_first`` (the paper): among viable candidates take
the least-used action so far, ties broken by the lower score, then by name. ``lowest_viable``:
the lowest-scoring viable candidate. ``greedy``: the highest score. If nothing is viable, the
highest score wins and the pick is recorded as a fallback. Usage counts are global: callers
select questions in an order fixed by a seed (a seeded shuffle: MMLU-Pro's ids come in category
blocks, so id order would decide which categories get the rare tools) and count each pick
before the next, so the result is deterministic for a given seed.
"""

from __future__ import annotations

import random
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
    total_before: int = 0  # how many picks of any action came before this one


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
        return Pick(action, judged[action], False, usage[action], sum(usage.values()))
    if strategy == "rarity_first":
        action = min(viable, key=lambda a: (usage[a], viable[a], a))
    elif strategy == "lowest_viable":
        action = min(viable, key=lambda a: (viable[a], a))
    elif strategy == "greedy":
        action = min(viable, key=lambda a: (-viable[a], a))
    else:
        raise ValueError(f"unknown selection strategy {strategy!r}")
    return Pick(action, viable[action], True, usage[action], sum(usage.values()))


def select_in_order(
    table: list[tuple[int, dict[str, float | None]]],
    usage: Counter,
    strategy: Strategy = "rarity_first",
    threshold: float = 6.0,
    order_seed: str | None = None,
) -> list[tuple[int, Pick]]:
    """Select for many questions, counting each pick in ``usage`` before the next — the
    barrier step over all shards. The order is ascending question_id, shuffled by
    ``order_seed`` when one is given."""
    ordered = sorted(table, key=lambda row: row[0])
    if order_seed is not None:
        random.Random(order_seed).shuffle(ordered)
    picks = []
    for question_id, scores in ordered:
        pick = select(scores, usage, strategy, threshold)
        usage[pick.action] += 1
        picks.append((question_id, pick))
    return picks
