"""Exact statistics for the report: bootstrap CIs, McNemar's exact test, entropy."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from spark_core.metrics import entropy_bits  # noqa: F401  (re-exported for the report)


def accuracy(correct: Sequence[bool]) -> float:
    return sum(correct) / len(correct) if correct else float("nan")


def bootstrap_ci(
    correct: Sequence[bool], samples: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of the accuracy (seeded, so reports are reproducible)."""
    n = len(correct)
    if n == 0:
        return float("nan"), float("nan")
    rng = random.Random(seed)
    values = list(correct)
    means = sorted(sum(rng.choices(values, k=n)) / n for _ in range(samples))
    lo_index = int(math.floor((1 - level) / 2 * samples))
    hi_index = min(samples - 1, int(math.ceil((1 + level) / 2 * samples)) - 1)
    return means[lo_index], means[hi_index]


def mcnemar_exact(a_correct: Sequence[bool], b_correct: Sequence[bool]) -> tuple[int, int, float]:
    """Paired test on the same questions: discordant counts (only A right, only B right) and
    the exact two-sided p-value, 2 * P(X <= min(b, c)) for X ~ Binomial(b + c, 1/2)."""
    if len(a_correct) != len(b_correct):
        raise ValueError("McNemar needs the same questions for both policies")
    only_a = sum(a and not b for a, b in zip(a_correct, b_correct, strict=True))
    only_b = sum(b and not a for a, b in zip(a_correct, b_correct, strict=True))
    n = only_a + only_b
    if n == 0:
        return only_a, only_b, 1.0
    k = min(only_a, only_b)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return only_a, only_b, min(1.0, 2 * tail)
