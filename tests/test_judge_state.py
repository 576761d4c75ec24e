"""judge.mode: per_state — the state prompt and its parse on hand-made replies, the failure
policy per candidate, structured output, and the local judge's constrained JSON."""

from __future__ import annotations

import json

import pytest
import torch

from spark_core.config import JudgeConfig
from spark_core.models.hf.backend import HFBackend
from spark_core.models.judge.judge import make_judge
from spark_core.models.judge.per_state import HFStateJudge
from spark_core.models.judge.prompt import JudgeItem
from spark_core.models.judge.scorers import HFJudge
from spark_core.models.judge.state_prompt import parse_state_reply, state_messages, state_schema
from spark_core.models.requests import ChatRequest


def state(n: int, question: str = "How many seconds are in 3 hours?") -> list[JudgeItem]:
    actions = ["calculator", "unit_converter", "knowledge_search", "cot", "python"]
    return [
        JudgeItem(
            question,
            ("1,080", "10,800", "18,000"),
            "Thought: hours to seconds.",
            actions[i % len(actions)],
            f"input {i}",
            f"output {i}",
            thought="Convert the hours.",
        )
        for i in range(n)
    ]


@pytest.fixture
def server(loopback_openai):
    loopback_openai.reset()
    return loopback_openai


def test_state_prompt_sends_the_shared_context_once_and_numbers_the_candidates():
    system, user = state_messages(state(3))
    assert system[0] == "system" and "JSON object" in system[1]
    text = user[1]
    assert text.count("How many seconds are in 3 hours?") == 1
    assert text.count("Convert the hours.") == 1
    assert text.index("1. Action: calculator") < text.index("2. Action: unit_converter")
    assert "3. Action: knowledge_search\n   Action Input: input 2\n   Observation: output 2" in text
    assert text.endswith('Scores as JSON (keys "1", "2", "3"; integers 0-10):')
    with pytest.raises(ValueError, match="one state"):
        state_messages(state(2) + state(1, "Another question?"))
    assert state_schema(2)["required"] == ["1", "2"]


@pytest.mark.parametrize(
    "reply, expected",
    [
        ('{"1": 7, "2": 3, "3": 10}', [7.0, 3.0, 10.0]),
        ('{"1": 7, "3": 2}', [7.0, None, 2.0]),  # candidate 2 missing
        ('Here:\n```json\n{"1": 7, "2": "4", "3": 11}\n```', [7.0, 4.0, None]),  # 11 out of range
        ('{"candidate 1": 5, "candidate_2": 6}', [5.0, 6.0, None]),
        ("1: 8\n2. 2\nCandidate 3 - 5", [8.0, 2.0, 5.0]),
        ("Candidate 2: **9**", [None, 9.0, None]),
        ('{"1": true, "2": null, "4": 3}', [None, None, None]),
        ("I cannot grade these.", [None, None, None]),
    ],
)
def test_parse_state_reply_on_hand_made_replies(reply, expected):
    assert parse_state_reply(reply, 3) == expected


def test_a_missing_score_fails_only_that_candidate_and_is_asked_again_alone(server):
    cfg = JudgeConfig(
        backend="openai", name="m", base_url=server.base_url, scoring="text", mode="per_state"
    )
    items = state(3)
    server.state.replies = ['{"1": 8, "3": 2}', "no idea"]  # the retry does not help
    judgements = make_judge(cfg.model_copy(update={"attempts": 2}), None).score(items)
    assert [(j.status, j.score) for j in judgements] == [("ok", 8), ("failed", None), ("ok", 2)]
    assert judgements[1].error.startswith("no score for candidate 1")  # its number on the retry
    assert server.state.requests == 2
    retry = server.state.log[1][-1]["content"]
    assert "1. Action: unit_converter" in retry and "calculator" not in retry
    # a call's tokens are shared among the candidates it scored: the sums are what was billed
    billed = sum(len(str(m["content"]).split()) for messages in server.state.log for m in messages)
    assert sum(j.prompt_tokens for j in judgements) == billed
    assert {j.method for j in judgements} == {"text_state"}

    server.reset()
    server.state.replies = ['{"1": 8, "3": 2}', '{"1": 6}']
    judgements = make_judge(cfg.model_copy(update={"attempts": 2}), None).score(items)
    assert [j.score for j in judgements] == [8, 6, 2] and judgements[1].attempts == 2


def test_per_state_is_one_call_per_state_with_a_json_schema(server):
    server.state.structured = {"json_schema"}
    server.state.reply_fn = lambda messages: "I give 9, then 1, then 4."
    cfg = JudgeConfig(
        backend="openai", name="m", base_url=server.base_url, scoring="structured", mode="per_state"
    )
    items = state(3) + state(2, "Which gas do plants absorb?")
    judgements = make_judge(cfg, None).score(items)
    assert [j.score for j in judgements] == [9, 1, 4, 9, 1]
    assert {j.method for j in judgements} == {"structured_state"}
    assert server.state.requests == 2  # two states, not five candidates
    schemas = [b["response_format"]["json_schema"]["schema"] for b in server.state.bodies]
    assert sorted(s["required"] for s in schemas) == [["1", "2"], ["1", "2", "3"]]
    assert json.loads(judgements[0].raw) == {"1": 9, "2": 1, "3": 4}


def test_per_state_results_come_from_the_response_cache_on_a_rerun(server, tmp_path):
    from spark_core.models.response_cache import ResponseCache

    cache = ResponseCache(tmp_path / "c.sqlite")
    cfg = JudgeConfig(
        backend="openai", name="m", base_url=server.base_url, scoring="text", mode="per_state"
    )
    server.state.default_reply = '{"1": 7, "2": 5}'
    first = make_judge(cfg, cache).score(state(2))
    again = make_judge(cfg, cache).score(state(2))
    assert server.state.requests == 1
    assert [j.score for j in again] == [j.score for j in first] and all(j.cached for j in again)
    # the per-candidate mode keys its own requests: nothing is served across modes
    make_judge(cfg.model_copy(update={"mode": "per_candidate"}), cache).score(state(2))
    assert server.state.requests == 3


@pytest.fixture(scope="module")
def backend(tiny_model_dir):
    return HFBackend(tiny_model_dir, device="cpu", batch_size=4)


def test_local_per_state_writes_json_on_one_kv_cache_like_a_full_forward_pass(backend):
    inner = HFJudge(backend)
    judge = HFStateJudge(inner)
    items = state(3)
    judgements = judge.score(items + state(2, "Which gas do plants absorb?"))
    assert all(j.status == "ok" and 0 <= j.score <= 10 for j in judgements)
    assert {j.method for j in judgements} == {"next_token_state"}
    written = json.loads(judgements[0].raw)
    assert list(written) == ["1", "2", "3"]
    # each candidate's score equals a from-scratch forward pass over the prompt and the JSON
    # written so far (the incremental cache, its probe token cropped, loses nothing)
    ids = judge._ids(backend.prompt_text(ChatRequest(state_messages(items), prefill='{"1": ')))
    for k in range(1, 4):
        with torch.inference_mode():
            logits = backend.model(input_ids=torch.tensor([ids + [inner.digit_ids[1]]])).logits
        end, after = logits[0, -2:-1].float(), logits[0, -1:].float()
        expected, grade = inner._scores_from_logits(end, after)[0]
        assert judgements[k - 1].score == pytest.approx(expected, abs=2e-3)
        assert judgements[k - 1].grade == written[str(k)] == grade  # the integer it wrote
        tail = "}" if k == 3 else f', "{k + 1}": '
        ids = ids + judge._ids(f"{written[str(k)]}{tail}")
    again = judge.score(items)
    assert [j.score for j in again] == [j.score for j in judgements[:3]]  # deterministic


def test_make_judge_builds_the_local_per_state_judge(tiny_model_dir):
    cfg = JudgeConfig(name=tiny_model_dir, device="cpu", mode="per_state")
    judgements = make_judge(cfg, None).score(state(2))
    assert [j.method for j in judgements] == ["next_token_state"] * 2


def test_old_local_mode_values_name_their_new_field():
    with pytest.raises(ValueError, match="judge.local_batching"):
        JudgeConfig(mode="prefix")
