"""Constrained policy steps on the tiny random model: valid actions, exact distributions."""

from __future__ import annotations

import math

import pytest

from spark_core.config import ACTIONS
from spark_core.models.constrained_actions.hf_steps import hf_policy_steps
from spark_core.models.constrained_actions.scoring import action_names
from spark_core.models.hf.backend import HFBackend
from spark_core.models.requests import ChatRequest, StepRequest
from spark_core.protocol import THOUGHT_STOP

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


def test_kv_session_rows_match_a_plain_forward_of_their_visible_tokens(backend):
    import torch

    from spark_core.models.hf.kv_session import KVSession

    tok = backend.tokenizer
    a = tok("Question: what is two plus two?", add_special_tokens=False).input_ids
    b = tok("Hi", add_special_tokens=False).input_ids
    x, y, z, w = (
        tok(t, add_special_tokens=False).input_ids[0] for t in (" four", " five", "!", " 4")
    )

    def plain(ids):
        with torch.inference_mode():
            return backend.model(input_ids=torch.tensor([ids])).logits[0, -1].float()

    session = KVSession(backend.model, tok.pad_token_id, "cpu")
    session.start([a, b])  # left-padded: b is shorter
    session.feed([[x, y], [z]])  # right-padded: row 1 gets one token
    session.retract(0, 1)  # row 0 takes back y
    session.feed([[w], []])
    assert torch.allclose(session.last[0], plain([*a, x, w]), atol=1e-4)
    assert torch.allclose(session.last[1], plain([*b, z]), atol=1e-4)
    fork = session.fork([1, 0, 1])
    fork.feed([[y], [z], [x, w]])
    assert torch.allclose(fork.last[0], plain([*b, z, y]), atol=1e-4)
    assert torch.allclose(fork.last[1], plain([*a, x, w, z]), atol=1e-4)
    assert torch.allclose(fork.last[2], plain([*b, z, x, w]), atol=1e-4)
    assert torch.allclose(session.last[1], plain([*b, z]), atol=1e-4)  # the original is intact
