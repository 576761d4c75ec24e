"""A synthesis step on the local backend (step_session.py): the thoughts and the candidates'
inputs decoded on kept KV sessions give the completions of the two separate calls."""

from __future__ import annotations

from spark_core.config import ACTIONS
from spark_core.models.generator import Generator
from spark_core.models.hf.backend import HFBackend
from spark_core.models.hf.step_session import StepSession, common_prefix
from spark_core.models.requests import ChatRequest
from spark_core.models.usage import Usage
from spark_core.protocol import INPUT_STOP, THOUGHT_STOP, Question, policy_messages

QUESTIONS = [
    Question(1, "What is 12 * 7?", ("84", "74", "96"), "math", "A"),
    Question(2, "Which gas do plants absorb from the air?", ("Oxygen", "CO2"), "biology", "B"),
    Question(3, "Convert 3 km to metres.", ("30", "300", "3000"), "physics", "C"),
]


def _requests(questions, thoughts=None):
    if thoughts is None:
        return [
            ChatRequest(
                policy_messages(q, "", list(ACTIONS)),
                max_new_tokens=12,
                prefill="Thought:",
                stop=THOUGHT_STOP,
            )
            for q in questions
        ]
    return [
        ChatRequest(
            policy_messages(q, "", list(ACTIONS)),
            max_new_tokens=6,
            prefill=f"Thought: {t.text.strip()}\nAction: {a}\nAction Input:",
            stop=INPUT_STOP,
        )
        for q, t in zip(questions, thoughts, strict=True)
        for a in ACTIONS
    ]


def test_common_prefix():
    assert common_prefix([1, 2, 3], [1, 2, 4, 5]) == 2
    assert common_prefix([], [1]) == 0 and common_prefix([7, 8], [7, 8]) == 2


def test_kept_sessions_give_the_completions_of_separate_calls(tiny_model_dir):
    backend = HFBackend(tiny_model_dir, "cpu", batch_size=4)  # 27 inputs: 7 chunks
    thoughts = backend.generate(_requests(QUESTIONS))
    inputs = backend.generate(_requests(QUESTIONS, thoughts))

    seen = []
    session = StepSession(backend)
    got_thoughts = session.thoughts(_requests(QUESTIONS), lambda i, c: seen.append(i))
    got_inputs = session.inputs(_requests(QUESTIONS, got_thoughts))
    assert [t.text for t in got_thoughts] == [t.text for t in thoughts]
    assert [c.text for c in got_inputs] == [c.text for c in inputs]
    assert [c.prompt_tokens for c in got_inputs] == [c.prompt_tokens for c in inputs]
    assert [c.completion_tokens for c in got_inputs] == [c.completion_tokens for c in inputs]
    assert seen == [0, 1, 2]
    # an input whose thought is not on a kept session is generated the plain way
    other = StepSession(backend).inputs(_requests(QUESTIONS[:1], thoughts[:1]))
    assert [c.text for c in other] == [c.text for c in inputs[: len(ACTIONS)]]


def test_generator_caches_the_same_entries_as_two_calls(tiny_model_dir, tmp_path):
    from spark_core.models.response_cache import ResponseCache

    backend = HFBackend(tiny_model_dir, "cpu", batch_size=16)
    cache = ResponseCache(tmp_path / "responses.sqlite")
    generator = Generator(backend, cache, Usage("tiny"))
    thoughts, inputs = generator.thoughts_and_inputs(
        _requests(QUESTIONS), lambda done: _requests(QUESTIONS, done)
    )
    # a second generator on the same cache serves every request of the two plain calls
    again = Generator(backend, cache, Usage("tiny"))
    cached = again.generate(_requests(QUESTIONS))
    assert all(c.cached for c in cached) and [c.text for c in cached] == [t.text for t in thoughts]
    cached_inputs = again.generate(_requests(QUESTIONS, cached))
    assert all(c.cached for c in cached_inputs)
    assert [c.text for c in cached_inputs] == [c.text for c in inputs]
