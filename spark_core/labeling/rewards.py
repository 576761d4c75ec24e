"""The composite reward and its returns and advantages (the terms named as in the paper).

Per step t of a trajectory of T steps::

    p_t  = (n_t + 1) / (N_t + K)                 running usage share of the selected action when
                                                 it was selected: n_t selections of it and N_t
                                                 in all before this one, K candidate actions
    r_t  = w_q * judge_score_t / 10              answer quality
         + w_d * d_t                             tool diversity (rewards.diversity):
      within_state:  d_t = log p_max,t - log p_t = log((m_t + 1) / (n_t + 1)), m_t the
                     selections before this one of the most-used *viable* candidate of the
                     same state (0 when the selected one is the only viable one, or on a
                     fallback)
      running_share: d_t = bonus(p_t) = 1 - p or -log p (rewards.rarity_bonus)
    o    = 1 if the trajectory's stated final answer is correct, else 0
           (wrong, or no answer: MMLU-Pro's seeded random guess earns nothing)
    G_t  = sum_k gamma^k r_{t+k} / sum_k gamma^k  +  gamma^(T-t) * w_c * o     (k = 0..T-t)
    A_t  = (G_t - baseline_t) / std(G - baseline)                  (normalised when configured)

Why this return: the process part is a (discounted) *mean* of the remaining step rewards, not a
sum. A sum with positive per-step rewards pays every extra step (at gamma = 1 a wrong 5-step
trajectory out-earned a correct 1-step one), so PPO would learn to put off answering. With the
mean, equal per-step quality gives the same return at any length, and the correctness of the
answer decides between trajectories; gamma < 1 additionally prefers answering sooner.

Why within the state (the default): a running share alone drifts to 1/K once a rule evens
usage out, so it barely varies (at paper scale under rarity_first its standard deviation was
0.001-0.03 against 0.08-0.13 for quality). Contrasting the selected candidate with the other
viable candidates of the same state rewards selecting a rarer tool than the alternatives, and
selecting the only viable tool earns nothing, under every selection rule.

Why the bonus is measured at selection: the final usage shares are flat once rarity-first has
evened them out, so a bonus computed from them is nearly constant. The running share says how
rare the action was when it was selected, which is what the diversity term is meant to reward.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from spark_core.config import RewardsConfig
from spark_core.data.answers import AnswerSource


def rarity_bonus(p: float, kind: str) -> float:
    if not 0 < p <= 1:
        raise ValueError(f"usage share must be in (0, 1], got {p}")
    if kind == "one_minus_p":
        return 1.0 - p
    if kind == "neg_log_p":
        return -math.log(p)
    raise ValueError(f"unknown rarity bonus {kind!r}")


def within_state_bonus(count_before: int, max_viable_before: int) -> float:
    """log share of the most-used viable candidate minus log share of the selected one, both
    at selection time: log((m + 1) / (n + 1)) (the add-one smoothed shares' common N + K
    cancels). Never negative (the most-used viable candidate includes the selected one); 0 when
    the selected candidate is the most-used viable candidate or the only one."""
    if count_before < 0 or max_viable_before < count_before:
        raise ValueError(f"bad usage counts {count_before}, {max_viable_before}")
    return math.log(max_viable_before + 1) - math.log(count_before + 1)


def diversity_bonuses(selected: Sequence[dict], n_actions: int, cfg: RewardsConfig) -> list[float]:
    """d_t of each selected step (rows of synthesis' ``selected``) under ``rewards.diversity``."""
    if cfg.diversity == "running_share":
        return [
            rarity_bonus(
                running_share(s["usage_before"], s["total_before"], n_actions), cfg.rarity_bonus
            )
            for s in selected
        ]
    out = []
    for s in selected:
        most = s.get("max_viable_usage_before")
        if most is None:
            raise ValueError(
                "rewards.diversity=within_state needs `max_viable_usage_before` in the selected "
                "steps (synthesis before code version 4): rerun synthesis, or set "
                "rewards.diversity=running_share"
            )
        out.append(within_state_bonus(s["usage_before"], most))
    return out


def variance_shares(parts: Sequence[dict[str, float]]) -> dict[str, float]:
    """Each component's share of the per-step reward's variance: cov(component, reward) /
    var(reward). The shares sum to 1 (a component anti-correlated with the rest is negative);
    all 0 when the reward is constant."""
    names = ("r_quality", "r_diversity", "r_correct")
    n = len(parts)
    if n == 0:
        return {c: 0.0 for c in names}
    mean = {c: sum(p[c] for p in parts) / n for c in (*names, "reward")}
    var = sum((p["reward"] - mean["reward"]) ** 2 for p in parts) / n
    if var <= 1e-18:
        return {c: 0.0 for c in names}
    return {
        c: sum((p[c] - mean[c]) * (p["reward"] - mean["reward"]) for p in parts) / n / var
        for c in names
    }


def running_share(count_before: int, total_before: int, n_actions: int) -> float:
    """The selected action's usage share at selection time, add-one smoothed over the K
    actions so the first selections of a run (no usage yet) get a defined share of 1/K."""
    if n_actions <= 0 or count_before < 0 or total_before < count_before:
        raise ValueError(f"bad usage counts {count_before}/{total_before} over {n_actions}")
    return (count_before + 1) / (total_before + n_actions)


def outcome(final_answer: str, source: str, answer: str) -> float:
    """1 for a correct answer the model gave (any ``AnswerSource`` but a guess); 0 for a wrong
    one or none (a guess is no answer)."""
    return float(source != AnswerSource.GUESS and final_answer == answer)


def step_rewards(
    scores: Sequence[float], bonuses: Sequence[float], o: float, cfg: RewardsConfig
) -> list[dict[str, float]]:
    """Reward components for one question's steps, in order; ``bonuses`` are the rarity
    bonuses measured at selection time. ``r_correct`` (w_c * o) sits on the last step."""
    out = []
    for t, (score, bonus) in enumerate(zip(scores, bonuses, strict=True)):
        r_quality = cfg.w_quality * score / 10.0
        r_diversity = cfg.w_diversity * bonus
        r_correct = cfg.w_correct * o if t == len(scores) - 1 else 0.0
        out.append(
            {
                "r_quality": r_quality,
                "r_diversity": r_diversity,
                "r_correct": r_correct,
                "reward": r_quality + r_diversity + r_correct,
            }
        )
    return out


def length_neutral_returns(process: Sequence[float], terminal: float, gamma: float) -> list[float]:
    """G_t = (discounted mean of the process rewards from t on) + gamma^(T-t) * terminal."""
    n = len(process)
    returns = [0.0] * n
    total, weight = 0.0, 0.0
    for t in reversed(range(n)):
        total = process[t] + gamma * total
        weight = 1.0 + gamma * weight
        returns[t] = total / weight + gamma ** (n - 1 - t) * terminal
    return returns


def trajectory_returns(parts: Sequence[dict[str, float]], gamma: float) -> list[float]:
    """Returns of one trajectory from its ``step_rewards``."""
    process = [p["r_quality"] + p["r_diversity"] for p in parts]
    return length_neutral_returns(process, parts[-1]["r_correct"] if parts else 0.0, gamma)


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


def spread(values: Sequence[float]) -> dict[str, float]:
    """min / mean / std / max and the number of distinct values: is a component informative?"""
    if not values:
        return {"min": 0.0, "mean": 0.0, "std": 0.0, "max": 0.0, "distinct": 0}
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
    return {
        "min": min(values),
        "mean": mean,
        "std": std,
        "max": max(values),
        "distinct": len({round(v, 9) for v in values}),
    }
