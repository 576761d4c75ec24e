"""Selection rules on hand-made score tables, with exact expected picks."""

from collections import Counter
from typing import get_args

import pytest

from spark_core.config import RolloutConfig, SelectionRule
from spark_core.synthesis.selection import RULES, Pick, pick_action, pick_in_order, rarity_first

SCORES = {"calculator": 9.0, "python": 8.0, "chemistry": 6.5, "cot": 7.5, "finance": 3.0}
THRESHOLD = 6.0


def pick(scores, usage, rule="rarity_first", threshold=THRESHOLD):
    return pick_action(scores, usage, rule, threshold)


def test_rarity_first_takes_the_least_used_viable_action():
    usage = Counter({"calculator": 5, "python": 2, "chemistry": 1, "cot": 0})
    assert pick(SCORES, usage) == Pick("cot", 7.5, True, 0, 8, 5)  # most-used viable: 5
    usage["cot"] = 4
    assert pick(SCORES, usage) == Pick("chemistry", 6.5, True, 1, 12, 5)


def test_rarity_first_is_the_rule_on_viable_candidates_alone():
    viable = {"calculator": 9.0, "python": 8.0, "cot": 7.5}
    assert rarity_first(viable, Counter({"calculator": 1, "python": 2, "cot": 1})) == "cot"
    assert rarity_first(viable, Counter({"cot": 3})) == "python"  # 0 uses each: lower score


def test_rarity_first_ties_break_by_lower_score_then_name():
    assert pick(SCORES, Counter()) == Pick("chemistry", 6.5, True, 0)
    tied = {"python": 7.0, "calculator": 7.0, "cot": 9.0}
    assert pick(tied, Counter()).action == "calculator"


def test_non_viable_candidates_are_never_chosen_while_one_is_viable():
    usage = Counter({"calculator": 3, "python": 3, "chemistry": 3, "cot": 3})
    assert pick(SCORES, usage).action == "chemistry"  # finance is unused but scores 3.0
    assert pick({"finance": 6.0, "cot": 6.5}, Counter({"cot": 4})).action == "cot"  # 6.0 is out


def test_lowest_viable_and_greedy():
    assert pick(SCORES, Counter(), "lowest_viable") == Pick("chemistry", 6.5, True, 0)
    greedy_pick = pick(SCORES, Counter({"calculator": 9}), "greedy")
    assert greedy_pick == Pick("calculator", 9.0, True, 9, 9, 9)


def test_lowest_viable_is_strictly_above_the_threshold():
    """The paper: "scoring above a threshold of 6.0"; a candidate at exactly 6.0 is not viable."""
    scores = {"calculator": 6.0, "python": 8.0, "cot": 7.0, "finance": 6.01, "chemistry": 5.0}
    usage = Counter({"python": 3, "cot": 1, "finance": 2})
    assert pick(scores, usage, "lowest_viable") == Pick("finance", 6.01, True, 2, 6, 3)
    del scores["finance"]
    assert pick(scores, usage, "lowest_viable") == Pick("cot", 7.0, True, 1, 6, 3)
    # nothing strictly above 6.0: the top score is the fallback, flagged not viable
    at_threshold = {"calculator": 6.0, "cot": 6.0, "chemistry": 4.0}
    assert pick(at_threshold, usage, "lowest_viable") == Pick("calculator", 6.0, False, 0, 6, 0)
    assert pick(at_threshold, usage, "rarity_first").viable is False


def test_fallback_to_the_highest_score_when_nothing_is_viable():
    low = {"calculator": 2.0, "python": 5.5, "cot": None, "finance": 5.5}
    assert pick(low, Counter()) == Pick("finance", 5.5, False, 0)  # tie on score broken by name
    with pytest.raises(ValueError):
        pick({"cot": None}, Counter())


def test_the_rules_are_the_configs_and_the_threshold_is_applied_as_given():
    assert set(RULES) == set(get_args(SelectionRule))
    assert RolloutConfig().selection in RULES
    assert pick(SCORES, Counter(), threshold=7.5).action == "python"  # chemistry, cot out
    with pytest.raises(ValueError, match="unknown selection rule"):
        pick(SCORES, Counter(), "best_first")


def test_usage_accumulates_in_question_order():
    table = [
        (30, {"calculator": 8.0, "cot": 8.0}),
        (10, {"calculator": 8.0, "cot": 9.0}),
        (20, {"calculator": 8.0, "cot": 9.0}),
    ]
    usage = Counter()
    picks = pick_in_order(table, usage, "rarity_first", THRESHOLD)
    assert [(q, p.action) for q, p in picks] == [
        (10, "calculator"),
        (20, "cot"),
        (30, "calculator"),
    ]
    assert usage == Counter({"calculator": 2, "cot": 1})
    assert picks[2][1].usage_before == 1
    assert [p.total_before for _, p in picks] == [0, 1, 2]
