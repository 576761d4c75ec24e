"""Selection rules on hand-made score tables, with exact expected selections."""

from collections import Counter
from typing import get_args

import pytest

from spark_core.config import RolloutConfig, SelectionRule
from spark_core.synthesis.selection import (
    RULES,
    Selection,
    rarity_first,
    select_action,
    select_in_order,
)

SCORES = {"calculator": 9.0, "python": 8.0, "chemistry": 6.5, "cot": 7.5, "finance": 3.0}
THRESHOLD = 6.0


def select(scores, usage, rule="rarity_first", threshold=THRESHOLD):
    return select_action(scores, usage, rule, threshold)


def test_rarity_first_takes_the_least_used_viable_action():
    usage = Counter({"calculator": 5, "python": 2, "chemistry": 1, "cot": 0})
    assert select(SCORES, usage) == Selection("cot", 7.5, True, 0, 8, 5)  # most-used viable: 5
    usage["cot"] = 4
    assert select(SCORES, usage) == Selection("chemistry", 6.5, True, 1, 12, 5)


def test_rarity_first_is_the_rule_on_viable_candidates_alone():
    viable = {"calculator": 9.0, "python": 8.0, "cot": 7.5}
    assert rarity_first(viable, Counter({"calculator": 1, "python": 2, "cot": 1})) == "cot"
    assert rarity_first(viable, Counter({"cot": 3})) == "python"  # 0 uses each: lower score


def test_rarity_first_ties_break_by_lower_score_then_name():
    assert select(SCORES, Counter()) == Selection("chemistry", 6.5, True, 0)
    tied = {"python": 7.0, "calculator": 7.0, "cot": 9.0}
    assert select(tied, Counter()).action == "calculator"


def test_non_viable_candidates_are_never_selected_while_one_is_viable():
    usage = Counter({"calculator": 3, "python": 3, "chemistry": 3, "cot": 3})
    assert select(SCORES, usage).action == "chemistry"  # finance is unused but scores 3.0
    assert select({"finance": 6.0, "cot": 6.5}, Counter({"cot": 4})).action == "cot"  # 6.0 is out


def test_lowest_viable_and_greedy():
    assert select(SCORES, Counter(), "lowest_viable") == Selection("chemistry", 6.5, True, 0)
    greedy_selection = select(SCORES, Counter({"calculator": 9}), "greedy")
    assert greedy_selection == Selection("calculator", 9.0, True, 9, 9, 9)


def test_lowest_viable_is_strictly_above_the_threshold():
    """The paper: "scoring above a threshold of 6.0"; a candidate at exactly 6.0 is not viable."""
    scores = {"calculator": 6.0, "python": 8.0, "cot": 7.0, "finance": 6.01, "chemistry": 5.0}
    usage = Counter({"python": 3, "cot": 1, "finance": 2})
    assert select(scores, usage, "lowest_viable") == Selection("finance", 6.01, True, 2, 6, 3)
    del scores["finance"]
    assert select(scores, usage, "lowest_viable") == Selection("cot", 7.0, True, 1, 6, 3)
    # nothing strictly above 6.0: the top score is the fallback, flagged not viable
    at_threshold = {"calculator": 6.0, "cot": 6.0, "chemistry": 4.0}
    assert select(at_threshold, usage, "lowest_viable") == Selection(
        "calculator", 6.0, False, 0, 6, 0
    )
    assert select(at_threshold, usage, "rarity_first").viable is False


def test_fallback_to_the_highest_score_when_nothing_is_viable():
    low = {"calculator": 2.0, "python": 5.5, "cot": None, "finance": 5.5}
    assert select(low, Counter()) == Selection(
        "finance", 5.5, False, 0
    )  # tie on score broken by name
    with pytest.raises(ValueError):
        select({"cot": None}, Counter())


def test_the_rules_are_the_configs_and_the_threshold_is_applied_as_given():
    assert set(RULES) == set(get_args(SelectionRule))
    assert RolloutConfig().selection in RULES
    assert select(SCORES, Counter(), threshold=7.5).action == "python"  # chemistry, cot out
    with pytest.raises(ValueError, match="unknown selection rule"):
        select(SCORES, Counter(), "best_first")


def test_usage_accumulates_in_question_order():
    table = [
        (30, {"calculator": 8.0, "cot": 8.0}),
        (10, {"calculator": 8.0, "cot": 9.0}),
        (20, {"calculator": 8.0, "cot": 9.0}),
    ]
    usage = Counter()
    selections = select_in_order(table, usage, "rarity_first", THRESHOLD)
    assert [(q, p.action) for q, p in selections] == [
        (10, "calculator"),
        (20, "cot"),
        (30, "calculator"),
    ]
    assert usage == Counter({"calculator": 2, "cot": 1})
    assert selections[2][1].usage_before == 1
    assert [p.total_before for _, p in selections] == [0, 1, 2]
