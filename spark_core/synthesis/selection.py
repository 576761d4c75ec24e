"""Which candidate a step keeps: the paper's literal rule and its ablations.

viable = judge score *strictly above* the threshold (``rollout.viable_threshold``; the paper:
"scoring above a threshold of 6.0", so a candidate at exactly 6.0 is not viable).
``lowest_viable`` (the paper's method sentence: "selecting the lowest-scoring tool among those
that pass the quality threshold"): the lowest-scoring viable candidate. ``rarity_first`` (an
ablation reading "favors less-frequently used" as usage counts): among viable candidates the
least-used action so far, ties broken by the lower score, then by name. ``greedy``: the highest
score. If nothing is viable, the highest score wins and the selection is recorded as a
fallback. Usage counts are global: callers select for questions in an order fixed by a seed (a
seeded shuffle: MMLU-Pro's ids come in category blocks, so id order would decide which
categories get the rare tools) and count each selection before the next, so the result is
deterministic for a given seed. The selected candidate is a step's ``selected`` row (DPO's
``chosen``, the preferred side of a pair, is another thing: ``training/dpo_pairs.py``).
The rule's name and the threshold are config (``rollout.selection``), never defaulted here.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from spark_core.config import SelectionRule


@dataclass(frozen=True)
class Selection:
    """The candidate the selection rule selected at a step, with the usage counts before it."""

    action: str
    score: float
    viable: bool  # False: nothing reached the threshold and this is the fallback
    usage_before: int  # how often the action had been selected before this selection
    total_before: int = 0  # how many selections of any action came before this one
    # usage count of the most-used viable candidate (the selected one's own when it is the
    # only one, or on a fallback): the within-state diversity term contrasts the selection with it
    max_viable_usage_before: int = 0


def is_viable(score: float, threshold: float) -> bool:
    """The paper's "scoring above a threshold": strict, so a score equal to it is not viable."""
    return score > threshold


def rarity_first(viable: dict[str, float], usage: Counter) -> str:
    """The usage-count ablation: among the viable candidates, the action used least so far;
    ties go to the lower score (the rarer *and* less obvious choice), then to the name."""
    return min(viable, key=lambda a: (usage[a], viable[a], a))


def lowest_viable(viable: dict[str, float], usage: Counter) -> str:
    """The paper's method sentence, literally: the lowest-scoring candidate that passes."""
    return min(viable, key=lambda a: (viable[a], a))


def greedy(viable: dict[str, float], usage: Counter) -> str:
    """The ablation without exploration: the top-scored candidate."""
    return min(viable, key=lambda a: (-viable[a], a))


# rollout.selection -> its rule (tests check the keys are exactly config's SelectionRule)
RULES: dict[str, Callable[[dict[str, float], Counter], str]] = {
    "rarity_first": rarity_first,
    "lowest_viable": lowest_viable,
    "greedy": greedy,
}


def select_action(
    scores: dict[str, float | None], usage: Counter, rule: SelectionRule, threshold: float
) -> Selection:
    """Select one action from ``scores`` (action -> judge score; None = failed judgement) by
    ``rule`` among those scoring above ``threshold``; the top score when none does."""
    judged = {a: s for a, s in scores.items() if s is not None}
    if not judged:
        raise ValueError("no candidate has a judge score")
    if rule not in RULES:
        raise ValueError(f"unknown selection rule {rule!r}; known: {list(RULES)}")
    viable = {a: s for a, s in judged.items() if is_viable(s, threshold)}
    total = sum(usage.values())
    if not viable:
        action = greedy(judged, usage)  # the fallback: the judge's favourite, flagged not viable
        return Selection(action, judged[action], False, usage[action], total, usage[action])
    action = RULES[rule](viable, usage)
    most = max(usage[a] for a in viable)
    return Selection(action, viable[action], True, usage[action], total, most)


def select_in_order(
    table: list[tuple[int, dict[str, float | None]]],
    usage: Counter,
    rule: SelectionRule,
    threshold: float,
    order_seed: str | None = None,
) -> list[tuple[int, Selection]]:
    """Select for many questions, counting each selection in ``usage`` before the next (the barrier
    step over all shards). The order is ascending question_id, shuffled by ``order_seed``
    when one is given."""
    ordered = sorted(table, key=lambda row: row[0])
    if order_seed is not None:
        random.Random(order_seed).shuffle(ordered)
    selections = []
    for question_id, scores in ordered:
        selection = select_action(scores, usage, rule, threshold)
        usage[selection.action] += 1
        selections.append((question_id, selection))
    return selections
