"""The composite reward and its returns and advantages (the terms named as in the paper).

    r_t = w_q * (judge_score_t / 10)              answer quality
        + w_d * rarity_bonus(p(action_t))          tool diversity
        + [t = last] * w_c * correct               terminal correctness
    G_t = sum_k gamma^k r_{t+k}
    A_t = (G_t - baseline_t) / std(G - baseline)   (normalised when configured)

p(action) is the action's share of all selections in the run (global usage frequency).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

from spark_core.config import RewardsConfig


def rarity_bonus(p: float, kind: str) -> float:
    if not 0 < p <= 1:
        raise ValueError(f"usage share must be in (0, 1], got {p}")
    if kind == "one_minus_p":
        return 1.0 - p
    if kind == "neg_log_p":
        return -math.log(p)
    raise ValueError(f"unknown rarity bonus {kind!r}")


def usage_shares(actions: Sequence[str]) -> dict[str, float]:
    counts = Counter(actions)
    total = sum(counts.values())
    return {a: c / total for a, c in counts.items()}


def step_rewards(
    scores: Sequence[float],
    actions: Sequence[str],
    shares: dict[str, float],
    correct: bool,
    cfg: RewardsConfig,
) -> list[dict[str, float]]:
    """Reward components for one question's steps, in order."""
    out = []
    for t, (score, action) in enumerate(zip(scores, actions, strict=True)):
        r_quality = cfg.w_quality * score / 10.0
        r_diversity = cfg.w_diversity * rarity_bonus(shares[action], cfg.rarity_bonus)
        r_correct = cfg.w_correct * float(correct) if t == len(scores) - 1 else 0.0
        out.append(
            {
                "r_quality": r_quality,
                "r_diversity": r_diversity,
                "r_correct": r_correct,
                "reward": r_quality + r_diversity + r_correct,
            }
        )
    return out


def discounted_returns(rewards: Sequence[float], gamma: float) -> list[float]:
    returns, running = [0.0] * len(rewards), 0.0
    for t in reversed(range(len(rewards))):
        running = rewards[t] + gamma * running
        returns[t] = running
    return returns


def advantages(returns: Sequence[float], steps: Sequence[int], cfg: RewardsConfig) -> list[float]:
    """Return minus a baseline (mean return at the same step index, or overall), optionally
    normalised to unit standard deviation over the whole batch."""
    if not returns:
        return []
    if cfg.baseline == "step_mean":
        by_step: dict[int, list[float]] = {}
        for g, t in zip(returns, steps, strict=True):
            by_step.setdefault(t, []).append(g)
        base = {t: sum(v) / len(v) for t, v in by_step.items()}
        adv = [g - base[t] for g, t in zip(returns, steps, strict=True)]
    elif cfg.baseline == "global_mean":
        mean = sum(returns) / len(returns)
        adv = [g - mean for g in returns]
    else:
        adv = list(returns)
    if cfg.normalize_advantages and len(adv) > 1:
        mean = sum(adv) / len(adv)
        std = math.sqrt(sum((a - mean) ** 2 for a in adv) / len(adv))
        adv = [(a - mean) / (std + 1e-8) for a in adv]
    return adv
