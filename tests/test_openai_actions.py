"""Constrained policy steps on a real OpenAI-compatible HTTP server on loopback: structured
output where the server has it, logprobs for the distribution, free text + parsing otherwise."""

from __future__ import annotations

import math

import pytest

from spark_core.config import ACTIONS, ModelConfig
from spark_core.models.constrained_actions.scoring import action_names
from spark_core.models.generator import make_generator
from spark_core.models.requests import StepRequest
from spark_core.protocol import INVALID

NAMES = tuple(action_names(list(ACTIONS)))
REQUEST = StepRequest((("system", "Solve it."), ("user", "What is 2+2?")), NAMES, 16, 8)
LOGPROBS = {"calcul": 0.5, "cot": 0.25, "python": 0.125, "Paris": 0.125}


@pytest.fixture
def server(loopback_openai, monkeypatch):
    loopback_openai.reset()
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    return loopback_openai


def _generator(server):
    return make_generator(ModelConfig(backend="openai", name="m", base_url=server.base_url), None)


def _script(server, action_reply: str) -> None:
    server.state.replies = ["Thought: add the numbers", action_reply, "2+2"]


def test_guided_choice_gives_a_valid_action_and_its_distribution(server):
    server.state.structured = {"guided_choice"}
    server.state.logprobs = LOGPROBS
    _script(server, "calculator")
    (step,) = _generator(server).policy_steps([REQUEST])
    assert (step.thought, step.action, step.action_input) == (
        "add the numbers",
        "calculator",
        "2+2",
    )
    assert step.extra["action_mode"] == "guided_choice"
    assert server.state.bodies[1]["guided_choice"] == list(NAMES)
    # "Paris" starts no name: the distribution is over the names, renormalised
    assert step.distribution["calculator"] == pytest.approx(0.5 / 0.875)
    assert step.distribution["cot"] == pytest.approx(0.25 / 0.875)
    assert math.isclose(sum(step.distribution.values()), 1.0)
    assert max(step.distribution, key=step.distribution.get) == step.action
    assert step.prompt_tokens > 0 and step.completion_tokens > 0


def test_a_server_refusing_guided_choice_falls_back_to_a_json_schema_enum(server):
    server.state.refuse = {"guided_choice"}
    server.state.structured = {"json_schema"}
    server.state.logprobs = LOGPROBS
    # the refused call consumes a scripted reply, as a real request would
    server.state.replies = ["Thought: add", "(refused)", "python", "print(2+2)"]
    generator = _generator(server)
    (step,) = generator.policy_steps([REQUEST])
    assert step.action == "python" and step.extra["action_mode"] == "json_schema"
    fmt = server.state.bodies[-2]["response_format"]
    assert fmt["json_schema"]["schema"]["properties"]["action"]["enum"] == list(NAMES)
    assert step.distribution["calculator"] == pytest.approx(0.5 / 0.875)
    server.state.replies = ["Thought: add", "python", "print(2+2)"]
    generator.policy_steps([StepRequest(REQUEST.messages, NAMES, 16, 8, seed=1)])
    assert "guided_choice" not in server.state.bodies[-2]  # remembered for this backend


def test_without_structured_output_free_text_is_parsed_or_invalid(server):
    _script(server, "I would use the calculator tool")
    generator = _generator(server)
    (step,) = generator.policy_steps([REQUEST])
    assert step.action == "calculator" and step.distribution == {}  # no logprobs returned
    _script(server, "banana")
    (step,) = generator.policy_steps([StepRequest(REQUEST.messages, NAMES, 16, 8, seed=2)])
    assert step.action == INVALID


def test_a_cost_limit_stops_policy_steps_and_a_higher_one_resumes_from_the_cache(server, tmp_path):
    """Evaluation's paid policy calls are under a cost limit like synthesis': it stops the
    batch before it is passed, and raising it resumes without paying again for finished steps."""
    from spark_core.models.response_cache import ResponseCache
    from spark_core.models.stop_rules import Budget, CostLimitReached

    server.state.default_reply = "cot"
    model = ModelConfig(backend="openai", name="m", base_url=server.base_url, concurrency=1)
    cache = ResponseCache(tmp_path / "c.sqlite")
    requests = [
        StepRequest((("user", f"Question {i}: " + "w " * 40),), NAMES, 16, 8) for i in range(6)
    ]

    def budget(limit: float) -> Budget:
        return Budget("generator", "m", limit, (1.0, 1.0), "evaluate/x/base", cache)

    first = budget(0.5)
    with pytest.raises(CostLimitReached, match="raise generator.max_cost_usd and rerun"):
        make_generator(model, cache).with_stop_rules(first).policy_steps(requests)
    sent = server.state.requests
    assert 0 < sent < 3 * len(requests) and first.spent() <= 0.5
    steps = make_generator(model, cache).with_stop_rules(budget(100.0)).policy_steps(requests)
    assert len(steps) == 6 and all(s.action in NAMES for s in steps)
    finished_before = sum(s.cached for s in steps)
    assert 0 < finished_before < 6  # the steps finished under the first limit came from the cache
    assert server.state.requests - sent == 3 * (6 - finished_before)  # 3 calls per new step
