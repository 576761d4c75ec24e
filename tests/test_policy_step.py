"""Constrained policy steps on the tiny random model: valid actions, exact distributions."""

from __future__ import annotations

import math

import pytest

from spark_core.config import ACTIONS
from spark_core.models.action_scoring import action_names
from spark_core.models.hf_backend import HFBackend
from spark_core.models.policy_step import THOUGHT_STOP, StepRequest, hf_policy_steps
from spark_core.models.requests import ChatRequest

NAMES = tuple(action_names(list(ACTIONS)))
QUESTIONS = ["What is 2+2?", "Convert 3 miles to km.", "Hi", "Which gas do plants absorb?"]


@pytest.fixture(scope="module")
def backend(tiny_model_dir):
    return HFBackend(tiny_model_dir, device="cpu", batch_size=4)


def _requests(**kw) -> list[StepRequest]:
    return [
        StepRequest((("system", "Solve it."), ("user", q)), NAMES, 12, 6, **kw) for q in QUESTIONS
    ]


def test_constrained_steps_choose_a_configured_action_greedily(backend):
    steps = hf_policy_steps(backend, _requests())
    assert len(steps) == len(QUESTIONS)
    for step in steps:
        assert step.action in NAMES
        assert set(step.distribution) == set(NAMES)
        assert math.isclose(sum(step.distribution.values()), 1.0, abs_tol=1e-9)
        assert step.action == max(step.distribution, key=step.distribution.get)
        assert step.completion_tokens <= 12 + 6
    # the thought is what greedy free decoding writes for the same prompt
    free = backend.generate(
        [ChatRequest(r.messages, 12, prefill="Thought:", stop=THOUGHT_STOP) for r in _requests()]
    )
    assert [s.thought for s in steps] == [f.text.strip() for f in free]


def test_batched_steps_equal_one_at_a_time(backend):
    batched = hf_policy_steps(backend, _requests())
    single = [hf_policy_steps(backend, [r])[0] for r in _requests()]
    for a, b in zip(batched, single, strict=True):
        assert (a.thought, a.action, a.action_input) == (b.thought, b.action, b.action_input)
        assert a.distribution == pytest.approx(b.distribution, abs=1e-4)


def test_sampled_steps_are_seeded(backend):
    a = hf_policy_steps(backend, _requests(temperature=1.0, seed=3))
    b = hf_policy_steps(backend, _requests(temperature=1.0, seed=3))
    c = hf_policy_steps(backend, _requests(temperature=1.0, seed=4))
    assert [s.to_dict() for s in a] == [s.to_dict() for s in b]
    assert [(s.thought, s.action) for s in a] != [(s.thought, s.action) for s in c]
    assert all(s.action in NAMES for s in a + c)
