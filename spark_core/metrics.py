"""Small, exact statistics shared by the synthesis summary and evaluation."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping


def entropy_bits(counts: Mapping[str, int] | Iterable[int]) -> float:
    """Shannon entropy (bits) of a count distribution."""
    values = list(counts.values()) if isinstance(counts, Mapping) else list(counts)
    total = sum(values)
    if total == 0:
        return 0.0
    return max(0.0, -sum(c / total * math.log2(c / total) for c in values if c > 0))


def normalized_entropy(counts: Mapping[str, int], n_actions: int) -> float:
    """Entropy divided by log2(number of possible actions): 1.0 is uniform usage."""
    return entropy_bits(counts) / math.log2(n_actions) if n_actions > 1 else 0.0


def quantile(values: list[float], q: float) -> float:
    """Linear-interpolated quantile (numpy's default), without numpy."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    pos = (len(ordered) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)
