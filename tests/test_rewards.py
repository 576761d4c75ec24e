"""Rewards, returns and advantages by hand; labeling's use of them; the seeded selection order."""

from __future__ import annotations

import math
from collections import Counter

import pyarrow as pa
import pytest

from spark_core.config import RewardsConfig, load_config
from spark_core.data.answers import AnswerSource
from spark_core.labeling.rewards import (
    advantages,
    length_neutral_returns,
    outcome,
    rarity_bonus,
    running_share,
    step_rewards,
    trajectory_returns,
)
from spark_core.labeling.trajectories import TRAJECTORIES_SCHEMA, label
from spark_core.synthesis.selection import select_in_order


def batch_advantages(cfg: RewardsConfig, trajectories):
    """(scores, bonuses, o) per trajectory -> advantages per trajectory, in order."""
    returns, steps, sizes = [], [], []
    for scores, bonuses, o in trajectories:
        parts = step_rewards(scores, bonuses, o, cfg)
        returns += trajectory_returns(parts, cfg.gamma)
        steps += list(range(1, len(scores) + 1))
        sizes.append(len(scores))
    adv, out = advantages(returns, steps, cfg), []
    for n in sizes:
        out.append(adv[:n])
        adv = adv[n:]
    return out


@pytest.mark.parametrize("preset", ["configs/demo.yaml", "configs/paper.yaml"])
def test_one_step_correct_beats_five_step_wrong(preset):
    cfg = load_config(preset).rewards
    assert (cfg.w_quality, cfg.w_diversity, cfg.w_correct, cfg.gamma) == (1.0, 0.5, 1.0, 1.0)
    # equal per-step quality: judge 8, bonus 0.5 -> r = 0.8 + 0.25 = 1.05 at every step
    correct, wrong = batch_advantages(cfg, [([8.0], [0.5], 1.0), ([8.0] * 5, [0.5] * 5, 0.0)])
    # returns 2.05 and 1.05 x5; step-1 baseline 1.55 -> raw [0.5, -0.5, 0, 0, 0, 0];
    # std sqrt(0.5 / 6) -> normalised [sqrt 3, -sqrt 3, 0, 0, 0, 0]
    assert correct == [pytest.approx(math.sqrt(3))]
    assert wrong == [pytest.approx(-math.sqrt(3))] + [pytest.approx(0.0, abs=1e-9)] * 4
    assert correct[0] > max(wrong)


def test_returns_do_not_grow_with_length_at_equal_quality():
    for n in (1, 2, 5):
        assert length_neutral_returns([1.05] * n, 1.0, 1.0) == pytest.approx([2.05] * n)
        assert length_neutral_returns([1.05] * n, 0.0, 1.0) == pytest.approx([1.05] * n)


def test_discounted_mean_return_by_hand():
    # G3 = 0.5 + 1; G2 = (0 + 0.5*0.5)/1.5 + 0.5*1; G1 = (1 + 0 + 0.25*0.5)/1.75 + 0.25*1
    got = length_neutral_returns([1.0, 0.0, 0.5], 1.0, 0.5)
    assert got == pytest.approx([1.125 / 1.75 + 0.25, 0.25 / 1.5 + 0.5, 1.5])


def test_rare_tool_earns_a_much_larger_bonus_than_a_common_one():
    # 10 selections so far, all of cot; 9 actions
    rare, common = running_share(0, 10, 9), running_share(10, 10, 9)
    assert (rare, common) == (pytest.approx(1 / 19), pytest.approx(11 / 19))
    assert rarity_bonus(rare, "one_minus_p") == pytest.approx(18 / 19)
    assert rarity_bonus(common, "one_minus_p") == pytest.approx(8 / 19)
    assert rarity_bonus(rare, "neg_log_p") == pytest.approx(math.log(19))
    assert running_share(0, 0, 9) == pytest.approx(1 / 9)  # first selection of a run
    with pytest.raises(ValueError):
        running_share(3, 2, 9)


def test_a_guess_is_no_answer():
    assert outcome("A", AnswerSource.GUESS, "A") == 0.0
    assert outcome("A", "guess", "A") == 0.0  # as read back from Parquet: the plain string
    for given in (AnswerSource.STATED, AnswerSource.FINAL_PROMPT, AnswerSource.ANSWER_ACTION):
        assert outcome("A", given, "A") == 1.0
    assert outcome("B", AnswerSource.STATED, "A") == 0.0


def test_answer_source_is_one_set_of_strings_for_every_stage():
    assert [s.value for s in AnswerSource] == ["answer_action", "stated", "final_prompt", "guess"]
    assert AnswerSource.FINAL_PROMPT == "final_prompt" and f"{AnswerSource.GUESS}" == "guess"
    # synthesis's final answers and evaluation's rows hold the same column, as plain strings
    from spark_core.evaluation.policy_rollout import EVAL_ROWS_SCHEMA
    from spark_core.synthesis.rollout import FINAL_SCHEMA

    for schema in (FINAL_SCHEMA, EVAL_ROWS_SCHEMA, TRAJECTORIES_SCHEMA):
        assert schema.field("answer_source").type == pa.string()


def _question(qid, answer="A"):
    return {
        "question_id": qid,
        "question": f"Question {qid}?",
        "options": ["yes", "no", "maybe"],
        "category": "chemistry",
        "answer": answer,
    }


def _selected(qid, step, action, score, usage_before, total_before, trajectory=""):
    return {
        "question_id": qid,
        "step": step,
        "action": action,
        "score": score,
        "viable": True,
        "usage_before": usage_before,
        "total_before": total_before,
        "trajectory_before": trajectory,
        "completion": f"Thought: t\nAction: {action}\nAction Input: x",
        "behaviour_logprobs": [-0.5, -1.0],
    }


def test_labeling_rewards_from_selection_time_usage_and_no_reward_for_guesses(run_config):
    cfg = run_config(
        "rollout.actions=[calculator,chemistry,cot]", "rewards.diversity=running_share"
    )
    questions = [_question(1), _question(2), _question(3)]  # K = 3
    selected = [
        _selected(1, 1, "cot", 6.0, 0, 0),  # p = 1/3
        _selected(2, 1, "chemistry", 8.0, 0, 1),  # p = 1/4
        _selected(3, 1, "cot", 7.0, 1, 2),  # p = 2/5
    ]
    finals = [
        {"question_id": 1, "final_answer": "A", "answer_source": AnswerSource.GUESS},  # lucky
        {"question_id": 2, "final_answer": "A", "answer_source": AnswerSource.STATED},
        {"question_id": 3, "final_answer": "B", "answer_source": AnswerSource.FINAL_PROMPT},
    ]
    rows = label(cfg, questions, selected, finals).to_pylist()
    assert [r["usage_share"] for r in rows] == pytest.approx([1 / 3, 1 / 4, 2 / 5])
    assert [r["r_diversity"] for r in rows] == pytest.approx([0.5 * 2 / 3, 0.5 * 3 / 4, 0.3])
    assert [r["r_quality"] for r in rows] == pytest.approx([0.6, 0.8, 0.7])
    assert [r["r_correct"] for r in rows] == [0.0, 1.0, 0.0]  # the guess earns nothing
    assert [r["answer_source"] for r in rows] == ["guess", "stated", "final_prompt"]
    assert rows[0]["correct"] is True  # still recorded: the letter matched
    assert [r["return"] for r in rows] == pytest.approx([0.6 + 1 / 3, 0.8 + 0.375 + 1, 1.0])
    assert rows[1]["advantage"] > 0 > rows[0]["advantage"]
    assert rows[0]["behaviour_logprobs"] == [-0.5, -1.0]


def test_selection_order_is_a_seeded_shuffle():
    table = [(q, {"calculator": 7.0, "chemistry": 7.0}) for q in range(12)]

    def selections(seed):
        return select_in_order(table, Counter(), "rarity_first", 6.0, order_seed=seed)

    by_id = [q for q, _ in selections(None)]
    assert by_id == list(range(12))
    first, again, other = selections("order:0:1"), selections("order:0:1"), selections("order:1:1")
    assert first == again  # deterministic for a seed
    assert [q for q, _ in first] != by_id and sorted(q for q, _ in first) == by_id
    assert [q for q, _ in first] != [q for q, _ in other]
    # the order decides who gets which tool; usage stays balanced either way
    assert Counter(p.action for _, p in first) == {"calculator": 6, "chemistry": 6}
    assert [(p.usage_before, p.total_before) for _, p in first[:3]] == [(0, 0), (0, 1), (1, 2)]


def test_rarity_bonus():
    assert rarity_bonus(0.25, "one_minus_p") == 0.75
    assert rarity_bonus(0.25, "neg_log_p") == pytest.approx(math.log(4))
    with pytest.raises(ValueError):
        rarity_bonus(0.0, "neg_log_p")


def test_step_rewards_exact():
    cfg = RewardsConfig(w_quality=1.0, w_diversity=0.5, w_correct=2.0)
    out = step_rewards([8.0, 6.0], [0.5, 0.75], 1.0, cfg)
    assert out[0] == pytest.approx(
        {"r_quality": 0.8, "r_diversity": 0.25, "r_correct": 0.0, "reward": 1.05}
    )
    assert out[1] == pytest.approx(
        {"r_quality": 0.6, "r_diversity": 0.375, "r_correct": 2.0, "reward": 2.975}
    )
    assert trajectory_returns(out, 1.0) == pytest.approx([(1.05 + 0.975) / 2 + 2.0, 2.975])
    wrong = step_rewards([8.0], [0.75], 0.0, cfg)
    assert wrong[0]["r_correct"] == 0.0 and wrong[0]["reward"] == pytest.approx(0.8 + 0.375)


def test_advantages_with_step_baseline_and_normalisation():
    cfg = RewardsConfig(baseline="step_mean", normalize_advantages=False)
    assert advantages([3.0, 1.0, 2.0, 4.0], [1, 1, 2, 2], cfg) == [1.0, -1.0, -1.0, 1.0]
    cfg = RewardsConfig(baseline="global_mean", normalize_advantages=True)
    adv = advantages([1.0, 2.0, 3.0], [1, 1, 1], cfg)
    assert adv == pytest.approx([-1.2247, 0.0, 1.2247], abs=1e-4)
    cfg = RewardsConfig(baseline="none", normalize_advantages=False)
    assert advantages([1.0, 2.0], [1, 2], cfg) == [1.0, 2.0]
