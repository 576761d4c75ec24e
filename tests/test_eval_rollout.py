"""Evaluation rollouts on the tiny random model: constrained and free action decoding,
answers from the model's own text, and guesses shared by every policy."""

from __future__ import annotations

import json
import math

import pytest

from spark_core.data.answers import AnswerSource
from spark_core.evaluation.policy_rollout import (
    EVAL_ROWS_SCHEMA,
    evaluate_policy,
    guess_letter,
    read_letter,
)
from spark_core.models.generator import Generator
from spark_core.models.hf.backend import HFBackend
from spark_core.models.usage import Usage
from spark_core.protocol import ANSWER, INVALID, Question
from tasks.tools import sandbox_for

QUESTIONS = [
    Question(i, q["question"], tuple(q["options"]), q["category"], q["answer"])
    for i, q in enumerate(
        json.loads(line) for line in open("spark_core/data/mmlu_pro_sample.jsonl").readlines()[:6]
    )
]


@pytest.fixture(scope="module")
def generator(tiny_model_dir):
    return Generator(HFBackend(tiny_model_dir, device="cpu", batch_size=8), None, Usage("tiny"))


def _cfg(run_config, tiny_model_dir, *extra):
    return run_config(
        f"generator.name={tiny_model_dir}",
        "rollout.thought_tokens=10",
        "rollout.input_tokens=6",
        "evaluation.steps=2",
        *extra,
    )


def test_constrained_decoding_stores_exact_distributions(run_config, tiny_model_dir, generator):
    cfg = _cfg(run_config, tiny_model_dir)
    names = [*cfg.rollout.actions, ANSWER]
    table = evaluate_policy(cfg, "base", QUESTIONS, generator, sandbox_for(cfg))
    assert table.schema.equals(EVAL_ROWS_SCHEMA)
    rows = table.to_pylist()
    steps = 0
    for row in rows:
        assert row["action_names"] == names and row["decoding"] == "constrained"
        assert len(row["step_probs"]) == len(row["actions"]) == row["steps"]
        for action, probs in zip(row["actions"], row["step_probs"], strict=True):
            steps += 1
            assert action in names  # only ever a configured action or answer
            assert math.isclose(sum(probs), 1.0, abs_tol=1e-9)
            assert names[max(range(len(names)), key=probs.__getitem__)] == action  # greedy
        assert row["invalid_actions"] == 0 and "invalid" not in row["actions"]
        assert row["answer_source"] in set(AnswerSource)  # one of the four strings
        assert (row["answer_source"] == AnswerSource.GUESS) == row["no_answer"]
    assert steps >= len(QUESTIONS)
    # a random model's text holds no option letter: its questions end in the seeded guess
    guessed = [r for r in rows if r["no_answer"]]
    assert guessed
    for row in guessed:
        n = len(QUESTIONS[row["question_id"]].options)
        assert row["final_answer"] == guess_letter(cfg.evaluation.seed, row["question_id"], n)


def test_free_decoding_counts_invalid_actions_and_keeps_the_models_text(
    run_config, tiny_model_dir, generator
):
    cfg = _cfg(run_config, tiny_model_dir, "evaluation.action_decoding=free")
    table = evaluate_policy(cfg, "base", QUESTIONS, generator, sandbox_for(cfg)).to_pylist()
    invalid = [r for r in table if INVALID in r["actions"]]
    assert invalid  # a random model writes no parsable action line
    for row in invalid:
        assert row["invalid_actions"] == row["actions"].count(INVALID)
        assert row["step_probs"] == [[]] * row["steps"]
        assert "Action: cot" not in row["transcript"]  # nothing invented
        assert row["transcript"].startswith("Thought:")


def test_guesses_are_the_same_for_every_policy(run_config, tiny_model_dir, generator):
    cfg = _cfg(run_config, tiny_model_dir, "evaluation.steps=1")
    greedy = evaluate_policy(cfg, "base", QUESTIONS, generator, sandbox_for(cfg)).to_pylist()
    sampled = evaluate_policy(cfg, "base@1", QUESTIONS, generator, sandbox_for(cfg)).to_pylist()
    assert {r["temperature"] for r in sampled} == {1.0}
    both = [
        (a, b) for a, b in zip(greedy, sampled, strict=True) if a["no_answer"] and b["no_answer"]
    ]
    assert both
    assert all(a["final_answer"] == b["final_answer"] for a, b in both)
    assert len({guess_letter(0, q, 10) for q in range(40)}) > 3  # still a random guess


def test_letters_come_only_from_the_models_text():
    assert read_letter("It is based on physics", 10) is None  # no wrapping: "It" is not I
    assert read_letter("(C)", 4) == "C" and read_letter("C", 4) == "C"
    assert read_letter("Based on the table, the answer is (B).", 4) == "B"
    assert read_letter("(H)", 4) is None  # not an option of a 4-option question
