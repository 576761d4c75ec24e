"""Reward math on hand-made trajectories, with exact expected values."""

import math

import pytest

from spark_core.config import RewardsConfig
from spark_core.rewards import (
    advantages,
    discounted_returns,
    rarity_bonus,
    step_rewards,
    usage_shares,
)


def test_rarity_bonus():
    assert rarity_bonus(0.25, "one_minus_p") == 0.75
    assert rarity_bonus(0.25, "neg_log_p") == pytest.approx(math.log(4))
    with pytest.raises(ValueError):
        rarity_bonus(0.0, "neg_log_p")


def test_step_rewards_exact():
    shares = usage_shares(["calculator", "calculator", "cot", "python"])  # .5, .25, .25
    cfg = RewardsConfig(w_quality=1.0, w_diversity=0.5, w_correct=2.0)
    out = step_rewards([8.0, 6.0], ["calculator", "cot"], shares, correct=True, cfg=cfg)
    assert out[0] == pytest.approx(
        {"r_quality": 0.8, "r_diversity": 0.25, "r_correct": 0.0, "reward": 1.05}
    )
    assert out[1] == pytest.approx(
        {"r_quality": 0.6, "r_diversity": 0.375, "r_correct": 2.0, "reward": 2.975}
    )
    wrong = step_rewards([8.0], ["python"], shares, correct=False, cfg=cfg)
    assert wrong[0]["r_correct"] == 0.0 and wrong[0]["reward"] == pytest.approx(0.8 + 0.375)


def test_discounted_returns():
    assert discounted_returns([1.0, 2.0, 3.0], 1.0) == [6.0, 5.0, 3.0]
    assert discounted_returns([1.0, 2.0, 3.0], 0.5) == pytest.approx([2.75, 3.5, 3.0])


def test_advantages_with_step_baseline_and_normalisation():
    cfg = RewardsConfig(baseline="step_mean", normalize_advantages=False)
    assert advantages([3.0, 1.0, 2.0, 4.0], [1, 1, 2, 2], cfg) == [1.0, -1.0, -1.0, 1.0]
    cfg = RewardsConfig(baseline="global_mean", normalize_advantages=True)
    adv = advantages([1.0, 2.0, 3.0], [1, 1, 1], cfg)
    assert adv == pytest.approx([-1.2247, 0.0, 1.2247], abs=1e-4)
    cfg = RewardsConfig(baseline="none", normalize_advantages=False)
    assert advantages([1.0, 2.0], [1, 2], cfg) == [1.0, 2.0]
