"""The time estimate (spark_core/time_estimate.py): stage times replayed from measured rates,
checked to the second on hand-made rates; and the calibrated dry run end to end."""

from __future__ import annotations

import dataclasses
import math

import pytest

from spark_core.config import load_config
from spark_core.protocol import Question
from spark_core.time_estimate import (
    Rates,
    estimate,
    evaluation_time,
    synthesis_time,
    training_time,
)

QUESTIONS = [Question(i, f"Question {i}?", ("a", "b", "c"), "math", "A") for i in range(2)]


def _cfg(tmp_path, *overrides):
    return load_config(
        "configs/demo.yaml",
        [
            f"runtime.runs_dir={tmp_path}",
            "rollout.steps=1",
            "rollout.thought_tokens=32",
            "rollout.input_tokens=16",
            "generator.batch_size=4",
            "evaluation.steps=1",
            *overrides,
        ],
    )


# prompts count 16 tokens (two messages' template) whatever their text: easy arithmetic
RATES = Rates(
    load_s=10.0,
    chars_per_token=1e12,
    gen_batch=4,
    prefill_tps=16.0,
    decode_step_s=0.1,
    judge_s=1.0,
    sandbox_start_s=2.0,
    tool_s=0.5,
    train_tps=100.0,
    train_load_s=3.0,
)


def test_synthesis_time_replays_every_phase(tmp_path):
    cfg = _cfg(tmp_path)
    got = synthesis_time(cfg, RATES, QUESTIONS)
    expected = (
        10
        + 2  # weights, sandbox
        + 2 * 16 / 16
        + 1 * 32 * 0.1  # thoughts: prefill 2 prompts, 32 steps of one batch
        + 2 * 9 * 4 / 16  # each candidate's action line on the thought's session
        + math.ceil(2 * 9 / 4) * 16 * 0.1  # 18 candidate inputs, batches of 4, 16 steps
        + 2 * 8 * 0.5  # 8 tool calls per question
        + 2 * 9 * 1.0  # 9 judgements per question
        + 2 * (16 + 32 + 16) / 16  # the selection: each selected step's log-probs, read again
        + 2 * 16 / 16
        + 3 * 0.1  # final answers
    )
    assert got.seconds == pytest.approx(expected)
    # with the one-row step calibrated, the session's 18 inputs decode together: a step is
    # 0.04 s plus (0.1 - 0.04) / 3 s a row, 16 steps
    together = synthesis_time(cfg, dataclasses.replace(RATES, decode_one_s=0.04), QUESTIONS)
    assert together.seconds - got.seconds == pytest.approx(
        16 * (0.04 + 18 * 0.02) - math.ceil(2 * 9 / 4) * 16 * 0.1
    )
    # a retry per failed tool call doubles the tool calls (upper bound: every call fails)
    retry = synthesis_time(_cfg(tmp_path, "rollout.tool_retries=1"), RATES, QUESTIONS)
    assert retry.seconds - got.seconds == pytest.approx(2 * 8 * 0.5)


def test_evaluation_and_training_scale_with_policies_and_epochs(tmp_path):
    cfg = _cfg(tmp_path, "evaluation.policies=[base]")
    one = evaluation_time(cfg, RATES, QUESTIONS).seconds
    per_policy = (2 * 16 / 16 + 48 * 0.1) + 2 * 0.5 + (2 * 16 / 16 + 3 * 0.1)
    common = 2 * 16 / 16  # common states: each held-out prompt read once per greedy policy
    assert one == pytest.approx(10 + per_policy + common)
    three = evaluation_time(_cfg(tmp_path, "evaluation.policies=[base,sft,ppo]"), RATES, QUESTIONS)
    # 2 merged copies
    assert three.seconds == pytest.approx(10 + 2 * 10 / 2 + 3 * (per_policy + common))
    seeded = _cfg(
        tmp_path,
        "evaluation.policies=[base,base@T,sft,ppo]",
        "evaluation.temperatures=[0.7,1.3]",
        "training.seeds=[0,1]",
    )
    # base, base@0.7, base@1.3 (rolled out, base tempered for the common states), 2 x 2 adapters
    got = evaluation_time(seeded, RATES, QUESTIONS).seconds
    assert got == pytest.approx(10 + 4 * 10 / 2 + 7 * per_policy + 5 * common)
    assert "7 policies" in evaluation_time(seeded, RATES, QUESTIONS).basis

    stages = {s.stage: s for s in estimate(cfg, RATES, QUESTIONS, QUESTIONS)}
    assert list(stages) == ["ingest", "synthesize", "label", "train", "evaluate"]
    tokens = 2 * (16 + 32 + 16)  # one state + one step per question
    trainers = cfg.training.trainers
    epochs = {"sft": cfg.training.sft.epochs, "ppo": cfg.training.ppo.epochs}
    assert stages["train"].seconds == pytest.approx(
        sum(3 + epochs[t] * tokens / 100 for t in trainers)
    )
    two_seeds = training_time(_cfg(tmp_path, "training.seeds=[0,1]"), RATES, QUESTIONS)
    assert two_seeds.seconds == pytest.approx(2 * stages["train"].seconds)
    uncalibrated = estimate(cfg, Rates(), QUESTIONS, QUESTIONS)
    assert math.isnan(uncalibrated[3].seconds)


def test_a_local_judge_is_timed_on_two_states_candidates_together(
    tmp_path, tiny_model_dir, monkeypatch
):
    """As synthesis judges (prefix mode: the rubric and each state read once, every candidate
    on them), not the preflight's pairs: the timed call scores every action's candidate of
    two states."""
    from spark_core.models.judge.scorers import HFJudge
    from spark_core.time_estimate import _calibrate_local_judge

    cfg = _cfg(tmp_path, f"judge.name={tiny_model_dir}", "judge.device=cpu")
    calls, real = [], HFJudge.score

    def recorded(self, items, on_done=None):
        calls.append(items)
        return real(self, items, on_done)

    monkeypatch.setattr(HFJudge, "score", recorded)
    per_judgement = _calibrate_local_judge(cfg, QUESTIONS[0])
    assert per_judgement > 0
    timed = calls[-1]
    assert [i.action for i in timed] == 2 * list(cfg.rollout.actions)
    assert len({i.shared_part for i in timed}) == 2  # two states: two shared prefixes
    assert all(len(i.tool_output) == cfg.rollout.observation_chars for i in timed)
