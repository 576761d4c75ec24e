"""Evaluation statistics against hand-computed values."""

import math

import pytest

from spark_core.evaluation.stats import accuracy, bootstrap_ci, mcnemar_exact
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
