"""Evaluation statistics against hand-computed values."""

import math

import pytest

from spark_core.evaluation.report import entropy_tests, summarize
from spark_core.evaluation.stats import (
    accuracy,
    bootstrap_ci,
    bootstrap_stat,
    mcnemar_exact,
    mean_state_entropy,
    paired_permutation_test,
    pooled_entropy,
)
from spark_core.metrics import entropy_bits, normalized_entropy, quantile


def test_entropy_by_hand():
    assert entropy_bits({"a": 1, "b": 1}) == pytest.approx(1.0)
    assert entropy_bits({"a": 2, "b": 1, "c": 1}) == pytest.approx(1.5)
    assert entropy_bits({"a": 5}) == 0.0 and entropy_bits({}) == 0.0
    uniform = {str(i): 3 for i in range(9)}
    assert normalized_entropy(uniform, 9) == pytest.approx(1.0)
    assert normalized_entropy({"a": 1, "b": 1}, 9) == pytest.approx(1 / math.log2(9))
    assert quantile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5


def test_mcnemar_on_a_known_table():
    # 10 discordant pairs split 9 / 1: p = 2 * (C(10,0) + C(10,1)) / 2^10 = 22 / 1024
    a = [True] * 9 + [False] * 1 + [True] * 5 + [False] * 5
    b = [False] * 9 + [True] * 1 + [True] * 5 + [False] * 5
    only_a, only_b, p = mcnemar_exact(a, b)
    assert (only_a, only_b) == (9, 1)
    assert p == pytest.approx(22 / 1024)
    assert mcnemar_exact([True, False], [True, False]) == (0, 0, 1.0)
    assert mcnemar_exact([True] * 3, [False] * 3)[2] == pytest.approx(0.25)
    with pytest.raises(ValueError):
        mcnemar_exact([True], [True, False])


def test_bootstrap_ci_brackets_the_accuracy_and_is_seeded():
    correct = [True] * 30 + [False] * 70
    lo, hi = bootstrap_ci(correct, samples=2000, seed=1)
    assert accuracy(correct) == 0.3
    assert lo < 0.3 < hi
    # the normal approximation: 0.3 +- 1.96 * sqrt(0.3 * 0.7 / 100) = [0.210, 0.390]
    assert lo == pytest.approx(0.21, abs=0.02) and hi == pytest.approx(0.39, abs=0.02)
    assert bootstrap_ci(correct, samples=2000, seed=1) == (lo, hi)
    assert bootstrap_ci([True, True, True]) == (1.0, 1.0)


def test_entropy_figures_by_hand():
    # per-state: mean over all states of H(P(.|s)); pooled: H of the chosen-action counts
    assert mean_state_entropy([[[0.5, 0.5], [1.0, 0.0]], [[0.25] * 4]]) == pytest.approx(1.0)
    assert math.isnan(mean_state_entropy([[[]], []]))  # free decoding: no distributions
    assert pooled_entropy([["a", "b"], ["a"], ["c"]]) == pytest.approx(1.5)


def test_paired_permutation_test_has_the_known_exact_p_value():
    # A: one uniform 2-way state per question (1 bit), B: one certain state (0 bits). Swapping
    # a question's pair moves the mean difference by 2/n, so |difference| >= 1 only with no
    # swap or all swaps: p = 2 / 2^n exactly.
    for n in (4, 10):
        a, b = [[[0.5, 0.5]]] * n, [[[1.0, 0.0]]] * n
        diff, p = paired_permutation_test(a, b, mean_state_entropy, samples=2**n)
        assert diff == pytest.approx(1.0) and p == pytest.approx(2 / 2**n)
    # pooled: A spreads 4 questions over 4 actions (2 bits), B always picks cot (0 bits)
    diff, p = paired_permutation_test(
        [["calculator"], ["python"], ["finance"], ["chemistry"]], [["cot"]] * 4, pooled_entropy
    )
    assert diff == pytest.approx(2.0) and p == pytest.approx(2 / 16)
    same = [[[0.3, 0.7]], [[0.9, 0.1]]]
    assert paired_permutation_test(same, same, mean_state_entropy) == (0.0, 1.0)
    # Monte Carlo (2^14 > samples): the exact p is 2 / 2^14; the estimate is (1 + hits) / 2001
    diff, p = paired_permutation_test(
        [[[0.5, 0.5]]] * 14, [[[1.0, 0.0]]] * 14, mean_state_entropy, samples=2000, seed=3
    )
    assert p <= 3 / 2001
    with pytest.raises(ValueError):
        paired_permutation_test([[]], [], pooled_entropy)


def test_bootstrap_stat_resamples_questions():
    units = [[[0.5, 0.5]], [[1.0, 0.0]]] * 20
    lo, hi = bootstrap_stat(units, mean_state_entropy, samples=2000, seed=1)
    # the mean of 40 Bernoulli(1/2)-like question values: 0.5 +- 1.96 * sqrt(0.25 / 40)
    assert lo == pytest.approx(0.345, abs=0.04) and hi == pytest.approx(0.655, abs=0.04)
    assert bootstrap_stat([["a"]] * 5, pooled_entropy) == (0.0, 0.0)
    assert all(math.isnan(v) for v in bootstrap_stat([[[]]], mean_state_entropy))


def _row(policy, qid, correct, no_answer, actions, probs):
    return {
        "policy": policy,
        "question_id": qid,
        "category": "math",
        "correct": correct,
        "no_answer": no_answer,
        "steps": len(actions),
        "actions": actions,
        "action_names": ["calculator", "cot", "answer"],
        "step_probs": probs,
        "invalid_actions": actions.count("invalid"),
        "tool_calls": 0,
        "tool_errors": 0,
    }


def test_summary_reports_answered_accuracy_invalid_rate_and_guessed_discordance():
    flat, sure = [1 / 3] * 3, [0.0, 1.0, 0.0]
    rows = [
        _row("base", 1, True, True, ["invalid"], [[]]),  # right by a guess
        _row("base", 2, False, False, ["cot", "answer"], [sure, sure]),
        _row("ppo", 1, False, False, ["calculator", "answer"], [flat, flat]),
        _row("ppo", 2, True, False, ["cot", "answer"], [flat, sure]),
    ]
    summary, usage, pairs, tests = summarize(rows, ["calculator", "cot"], samples=200)
    overall = {r["policy"]: r for r in summary.to_pylist() if r["category"] == "overall"}
    assert overall["base"]["accuracy"] == 0.5 and overall["base"]["answered_accuracy"] == 0.0
    assert overall["base"]["invalid_rate"] == pytest.approx(1 / 3)
    assert overall["ppo"]["state_entropy_bits"] == pytest.approx(3 * math.log2(3) / 4)
    assert overall["ppo"]["state_normalized_entropy"] == pytest.approx(0.75)
    # `answer` left out and renormalised: flat -> [1/2, 1/2] (1 bit), sure -> [0, 1] (0 bits)
    assert overall["ppo"]["tool_state_entropy_bits"] == pytest.approx(0.75)
    assert overall["ppo"]["tool_state_normalized_entropy"] == pytest.approx(0.75)  # m = 2
    assert overall["base"]["tool_state_entropy_bits"] == 0.0
    assert overall["ppo"]["entropy_bits"] == pytest.approx(1.0)  # calculator, cot
    assert overall["base"]["entropy_bits"] == 0.0  # cot only; invalid is not a choice
    (pair,) = pairs.to_pylist()
    assert (pair["only_a_correct"], pair["only_b_correct"], pair["discordant_with_guess"]) == (
        1,
        1,
        1,
    )
    assert {"invalid"} <= {r["action"] for r in usage.to_pylist()}
    assert [(r["policy_b"], r["figure"]) for r in tests.to_pylist()] == [
        ("base", "per-state"),
        ("base", "per-state tools"),
        ("base", "pooled"),
    ]
    assert entropy_tests(rows, ["base", "sft"]) == []  # nothing to test without ppo
