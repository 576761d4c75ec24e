"""Exact statistics for the report: bootstrap CIs, McNemar's exact test, entropy, a paired
permutation test for entropy differences, Holm's adjustment, Miller–Madow and the sample size a
decision needs."""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Callable, Sequence
from statistics import NormalDist
from typing import TypeVar

from spark_core.config import EvaluationConfig, default_of
from spark_core.metrics import entropy_bits
from spark_core.protocol import ANSWER

# bootstrap resamples where a caller gives none: evaluation.bootstrap_samples's default
BOOTSTRAP_SAMPLES: int = default_of(EvaluationConfig, "bootstrap_samples")

T = TypeVar("T")


def accuracy(correct: Sequence[bool]) -> float:
    return sum(correct) / len(correct) if correct else float("nan")


def bootstrap_ci(
    correct: Sequence[bool], samples: int = BOOTSTRAP_SAMPLES, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of the accuracy (seeded, so reports are reproducible)."""
    n = len(correct)
    if n == 0:
        return float("nan"), float("nan")
    rng = random.Random(seed)
    values = list(correct)
    return percentile_interval([sum(rng.choices(values, k=n)) / n for _ in range(samples)], level)


def percentile_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of bootstrap values (NaN ones dropped; NaN if none is left)."""
    kept = sorted(v for v in values if not math.isnan(v))
    if not kept:
        return float("nan"), float("nan")
    lo = int(math.floor((1 - level) / 2 * len(kept)))
    hi = min(len(kept) - 1, int(math.ceil((1 + level) / 2 * len(kept))) - 1)
    return kept[lo], kept[hi]


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


def bootstrap_stat(
    units: Sequence[T],
    statistic: Callable[[Sequence[T]], float],
    samples: int = BOOTSTRAP_SAMPLES,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of any statistic, resampling whole units (questions:
    a question's states stay together). NaN resamples are dropped; NaN if none is left."""
    if not units:
        return float("nan"), float("nan")
    rng = random.Random(seed)
    return percentile_interval(
        [statistic(rng.choices(units, k=len(units))) for _ in range(samples)], level
    )


def paired_permutation_test(
    a_units: Sequence[T],
    b_units: Sequence[T],
    statistic: Callable[[Sequence[T]], float],
    samples: int = 10_000,
    seed: int = 0,
) -> tuple[float, float]:
    """Paired permutation test of statistic(A) - statistic(B) on the same questions: under
    the null the two policies' units are exchangeable within each question, so each question's
    pair is swapped at random. Returns (observed difference, two-sided p-value). Exact (all
    2^n swaps) when 2^n <= samples, else Monte Carlo with the (1 + hits) / (1 + samples) rule."""
    if len(a_units) != len(b_units):
        raise ValueError("a paired test needs the same questions for both policies")
    n = len(a_units)
    observed = statistic(a_units) - statistic(b_units)
    if n == 0 or math.isnan(observed):
        return observed, float("nan")

    def difference(swaps: Sequence[bool]) -> float:
        a = [b if s else a for a, b, s in zip(a_units, b_units, swaps, strict=True)]
        b = [a if s else b for a, b, s in zip(a_units, b_units, swaps, strict=True)]
        return statistic(a) - statistic(b)

    tolerance = 1e-12 * max(1.0, abs(observed))
    if 2**n <= samples:
        hits = sum(
            abs(difference([bool(mask >> i & 1) for i in range(n)])) >= abs(observed) - tolerance
            for mask in range(2**n)
        )
        return observed, hits / 2**n
    rng = random.Random(seed)
    hits = sum(
        abs(difference([rng.random() < 0.5 for _ in range(n)])) >= abs(observed) - tolerance
        for _ in range(samples)
    )
    return observed, (1 + hits) / (1 + samples)


def pooled_mean(units: Sequence[Sequence[float]]) -> float:
    """The mean of every value of every unit (a question's per-state entropies); NaN if none."""
    total, count = 0.0, 0
    for values in units:
        total += sum(values)
        count += len(values)
    return total / count if count else float("nan")


def state_entropies(distributions: Sequence[Sequence[float]]) -> list[float]:
    """Entropy (bits) of each state's P(action | state); states without one are skipped."""
    return [entropy_bits(p) for p in distributions if p]


def without_answer(probs: Sequence[float], names: Sequence[str]) -> list[float]:
    """P(action | state) over the candidate actions synthesis offers (tools and cot): `answer`
    left out and the rest renormalised, so evaluation measures the choice training saw. []
    when nothing is left (all mass on `answer`) or there is no distribution."""
    if not probs:
        return []
    kept = [p for p, name in zip(probs, names, strict=True) if name != ANSWER]
    mass = sum(kept)
    return [p / mass for p in kept] if mass > 0 else []


def tool_state_entropies(
    distributions: Sequence[Sequence[float]], names: Sequence[str]
) -> list[float]:
    """Entropy (bits) of each state's P(action | state) over the actions without `answer`."""
    return state_entropies([without_answer(p, names) for p in distributions if p])


def mean_state_entropy(units: Sequence[Sequence[Sequence[float]]]) -> float:
    """Mean entropy (bits) of P(action | state) over every state of every question; NaN
    when no state has a distribution (free decoding)."""
    return pooled_mean([state_entropies(states) for states in units])


def pooled_entropy(units: Sequence[Sequence[str]]) -> float:
    """Entropy (bits) of the pooled counts of the actions chosen over all questions."""
    return entropy_bits(Counter(a for taken in units for a in taken))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input order: the i-th smallest p times
    (m - i + 1), made monotone (running maximum) and capped at 1. Rejecting where the
    adjusted p <= alpha controls the family-wise error rate at alpha."""
    m = len(p_values)
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(sorted(range(m), key=lambda i: p_values[i])):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def miller_madow_bits(counts: Sequence[int]) -> float:
    """Miller–Madow corrected entropy (bits) of a count distribution: the plug-in entropy
    plus (m_hat - 1) / (2 N ln 2), m_hat the values with a nonzero count, N the total; the
    plug-in estimate is biased low by about that much. 0.0 without counts."""
    n = sum(counts)
    if n == 0:
        return 0.0
    m_hat = sum(c > 0 for c in counts)
    return entropy_bits(counts) + (m_hat - 1) / (2 * n * math.log(2))


def questions_needed(
    effect: float, se: float, n: int, null: float, alpha: float, power: float
) -> float:
    """Questions a one-sided level-alpha test of effect > null (or < null when the effect
    is below it) would need for the given power, by the normal approximation:
    n * ((z_{1-alpha} + z_power) * se / (effect - null))^2, where se is the standard error
    at n questions (so se * sqrt(n) is the per-question standard deviation). inf when the
    effect equals the null; NaN without a standard error."""
    if math.isnan(se) or math.isnan(effect) or n == 0:
        return float("nan")
    if effect == null:
        return math.inf
    z = NormalDist().inv_cdf(1 - alpha) + NormalDist().inv_cdf(power)
    return math.ceil(n * (z * se / (effect - null)) ** 2)
