"""The OpenAI path against a real HTTP server on loopback (no client patching)."""

from __future__ import annotations

import logging

import pytest

from spark_core.config import JudgeConfig, ModelConfig
from spark_core.models.generator import make_generator
from spark_core.models.judge.judge import make_judge
from spark_core.models.judge.prompt import JudgeItem
from spark_core.models.judge.scorers import expected_score, parse_score
from spark_core.models.openai.backend import BackendError, OpenAIBackend
from spark_core.models.requests import ChatRequest
from spark_core.models.response_cache import ResponseCache

SECRET = "sk-loopback-secret-4242"
ITEM = JudgeItem("What is 2+2?", ("3", "4"), "", "calculator", "2+2", "4")


@pytest.fixture
def server(loopback_openai, monkeypatch):
    loopback_openai.reset()
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    return loopback_openai


def model_cfg(server, **over) -> ModelConfig:
    return ModelConfig(backend="openai", name="gpt-4o", base_url=server.base_url, **over)


def judge_cfg(server, **over) -> JudgeConfig:
    # scoring=logprobs: ask for logprobs, parse the text when none come (no probe requests,
    # so the request counts below are the judgements'); tests/test_judge_check.py probes
    over = {"scoring": "logprobs", **over}
    return JudgeConfig(backend="openai", name="gpt-4o", base_url=server.base_url, **over)


def test_retries_on_injected_429_and_500_then_succeeds(server):
    server.state.inject = [429, 500, 503]
    gen = make_generator(model_cfg(server), cache=None)
    (done,) = gen.generate([ChatRequest.user("hello")])
    assert done.text == "echo: hello" and done.finish_reason == "stop"
    assert server.state.requests == 4
    assert gen.backend.retries == 3


def test_a_client_error_is_not_retried(server):
    server.state.inject = [400]
    gen = make_generator(model_cfg(server), cache=None)
    (done,) = gen.generate([ChatRequest.user("hello")])
    assert done.finish_reason == "error" and "HTTP 400" in done.extra["error"]
    assert server.state.requests == 1 and gen.usage.failed_calls == 1


def test_timeout_is_retried_then_reported(server):
    server.state.latency_s = 1.5
    gen = make_generator(model_cfg(server, timeout_s=0.2, max_retries=1), cache=None)
    (done,) = gen.generate([ChatRequest.user("slow")])
    assert done.finish_reason == "error" and "Timeout" in done.extra["error"]
    assert server.state.requests == 2


def test_non_numeric_reply_is_retried_then_parsed(server):
    server.state.replies = ["I think this step is quite good.", "Score: 7/10"]
    judge = make_judge(judge_cfg(server), cache=None)
    (j,) = judge.score([ITEM])
    assert (j.status, j.score, j.attempts) == ("ok", 7.0, 2)


def test_reply_with_no_score_is_a_failed_judgement_never_zero(server, tmp_path):
    server.state.default_reply = "This step is helpful."
    cache = ResponseCache(tmp_path / "cache.sqlite")
    judge = make_judge(judge_cfg(server, attempts=3), cache=cache)
    (j,) = judge.score([ITEM])
    assert j.status == "failed" and j.score is None and "no score" in j.error
    assert server.state.requests == 3 and judge.usage.failed_calls == 1
    judge.score([ITEM])  # not cached: a rerun asks again
    assert server.state.requests == 6


def test_logprob_weighted_score(server):
    server.state.default_reply = "8"
    server.state.logprobs = {"7": 0.5, "8": 0.25, "9": 0.2, " the": 0.05}
    (j,) = make_judge(judge_cfg(server), cache=None).score([ITEM])
    assert j.status == "ok"
    assert j.score == pytest.approx((7 * 0.5 + 8 * 0.25 + 9 * 0.2) / 0.95)


def test_cache_answers_without_a_request(server, tmp_path):
    cache = ResponseCache(tmp_path / "cache.sqlite")
    requests = [ChatRequest.user("one"), ChatRequest.user("two")]
    first = make_generator(model_cfg(server), cache).generate(requests)
    assert server.state.requests == 2
    again = make_generator(model_cfg(server), cache)  # a new process would do the same
    second = again.generate(requests)
    assert server.state.requests == 2
    assert [c.text for c in second] == [c.text for c in first] and all(c.cached for c in second)
    assert again.usage.cached_calls == 2 and again.usage.prompt_tokens == 0
    server.state.default_reply = "9"
    judge = make_judge(judge_cfg(server), cache)
    judge.score([ITEM])
    make_judge(judge_cfg(server), cache).score([ITEM])
    assert server.state.requests == 3


def test_usage_and_cost_for_a_known_model(server):
    gen = make_generator(model_cfg(server), cache=None)
    gen.generate([ChatRequest.user("a b c d"), ChatRequest.user("e f")])
    summary = gen.usage.summary()
    assert summary["calls"] == 2 and summary["prompt_tokens"] == 6
    expected = (6 * 0.0025 + summary["completion_tokens"] * 0.01) / 1000
    assert summary["cost_usd"] == pytest.approx(expected)
    completion = summary["completion_tokens"]
    assert gen.usage.line() == f"2 calls (0 cached), 6+{completion:,} tokens, ${expected:.4f}"


def test_concurrent_requests_keep_their_order(server):
    server.state.latency_s = 0.05
    gen = make_generator(model_cfg(server, concurrency=8), cache=None)
    out = gen.generate([ChatRequest.user(f"q{i}") for i in range(20)])
    assert [c.text for c in out] == [f"echo: q{i}" for i in range(20)]


def test_api_key_never_reaches_logs_or_cache(server, tmp_path, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    server.state.inject = [500]
    cache = ResponseCache(tmp_path / "cache.sqlite")
    make_generator(model_cfg(server), cache).generate([ChatRequest.user("secret?")])
    server.state.default_reply = "5"
    make_judge(judge_cfg(server), cache).score([ITEM])
    assert SECRET in server.state.keys_seen  # it was sent, in the header only
    out, err = capfd.readouterr()
    assert SECRET not in caplog.text + out + err
    cache.close()
    for file in tmp_path.iterdir():
        assert SECRET.encode() not in file.read_bytes()


def test_missing_key_for_openai_itself_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("SPARK_TEST_MISSING_KEY", raising=False)
    with pytest.raises(BackendError, match="set the environment variable SPARK_TEST_MISSING_KEY"):
        OpenAIBackend("gpt-4o", None, "SPARK_TEST_MISSING_KEY")


@pytest.mark.parametrize(
    "text, score",
    [
        ("7", 7.0),
        ("Score: 8", 8.0),
        ("**9** out of 10", 9.0),
        ("I'd give it 6/10.", 6.0),
        ("10", 10.0),
        ("Score: 3.5", 3.5),
        ("no idea", None),
        ("42", None),
    ],
)
def test_parse_score(text, score):
    assert parse_score(text) == score


def test_expected_score_ignores_non_scores():
    assert expected_score({"x": -0.1, "11": -0.1}) is None
    assert expected_score({"10": 0.0}) == 10.0
