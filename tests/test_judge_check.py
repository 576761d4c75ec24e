"""A judge you can trust on any server: capability probes, structured scores, the failure
policy, the cost limit, `spark check` and `spark run --dry-run` — against a real HTTP server
on loopback."""

from __future__ import annotations

import re
from collections import Counter

import prefect.main  # noqa: F401  (Prefect logs to stderr, not to a CliRunner stream)
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from flows.cli import app
from spark_core.config import JudgeConfig, ModelConfig, load_config
from spark_core.models.generator import make_generator
from spark_core.models.judge.judge import make_judge
from spark_core.models.judge.prompt import JudgeItem
from spark_core.models.openai.backend import OpenAIBackend
from spark_core.models.openai.capabilities import capabilities_for
from spark_core.models.requests import ChatRequest
from spark_core.models.response_cache import ResponseCache
from spark_core.models.stop_rules import Budget, CostLimitReached, FailureWatch, JudgeFailing
from spark_core.synthesis.barrier import advance_trajectories, initial_states, judge_stops
from spark_core.synthesis.rollout import SCORES_SCHEMA
from spark_core.synthesis.summary import summarize
from tests.helpers import cli_cfg, rubric

runner = CliRunner()


@pytest.fixture
def server(loopback_openai):
    loopback_openai.reset()
    return loopback_openai


def items(n: int) -> list[JudgeItem]:
    return [
        JudgeItem(
            question=f"What is {i}+{i}?",
            options=("1", "2"),
            trajectory="",
            action="calculator",
            tool_input=f"{i}+{i}",
            tool_output="x",
        )
        for i in range(n)
    ]


def test_probe_detects_what_the_endpoint_supports_and_caches_it(server, tmp_path):
    backend = OpenAIBackend("judge-model", server.base_url)
    caps = capabilities_for(backend, None)
    assert (caps.logprobs, caps.structured) == (False, None)  # a plain server: text only
    server.state.structured = {"json_schema"}
    assert capabilities_for(backend, None).structured == "response_format"
    server.state.logprobs = {"7": 0.9, "6": 0.1}
    cache = ResponseCache(tmp_path / "c.sqlite")
    caps = capabilities_for(backend, cache)
    assert caps.logprobs and caps.structured == "response_format"
    before = server.state.requests
    assert capabilities_for(backend, cache) == caps and server.state.requests == before


def test_structured_output_scores_when_there_are_no_logprobs(server):
    server.state.structured = {"json_schema"}
    server.state.reply_fn = lambda messages: "I would say 8, it is decisive."
    judge = make_judge(JudgeConfig(backend="openai", name="m", base_url=server.base_url), None)
    (j,) = judge.score(items(1))
    assert (j.status, j.score, j.method) == ("ok", 8.0, "structured")
    assert j.raw == '{"score": 8}'


def test_failure_watch_stops_early_then_a_rerun_resumes_from_the_cache(server, tmp_path):
    cfg = JudgeConfig(backend="openai", name="m", base_url=server.base_url, attempts=1)
    cfg = cfg.model_copy(update={"scoring": "text", "concurrency": 1})
    cache = ResponseCache(tmp_path / "c.sqlite")
    replies = iter(["7", "6", "C. 99.09", "The derivative of f(x) =", "nothing", "oops"])
    server.state.reply_fn = lambda messages: next(replies, "still nothing")
    watch = FailureWatch(6, 0.5, "m", server.base_url)
    judge = make_judge(cfg, cache).with_stop_rules(None, watch)
    with pytest.raises(JudgeFailing) as stop:
        judge.score(items(10))
    message = str(stop.value)
    assert "judge m at " + server.base_url in message and "failed 4 of its first 6" in message
    assert "'C. 99.09'" in message and "'The derivative of f(x) ='" in message
    assert "spark check judge" in message and "rerun" in message
    assert server.state.requests == 6  # stopped: the other 4 were never sent
    server.state.reply_fn = lambda messages: "5"
    results = make_judge(cfg, cache).score(items(10))
    assert [r.score for r in results[:2]] == [7.0, 6.0] and results[0].cached
    assert server.state.requests == 6 + 8  # the two good judgements came from the cache


def test_cost_limit_stops_before_the_limit_and_resumes_when_raised(server, tmp_path):
    server.state.default_reply = "a b c d"  # 4 completion tokens
    model = ModelConfig(backend="openai", name="m", base_url=server.base_url, concurrency=1)
    cache = ResponseCache(tmp_path / "c.sqlite")
    requests = [ChatRequest.user(f"question {i} " + "w " * 50, max_new_tokens=4) for i in range(8)]
    prices = (1.0, 1.0)  # $1 per 1k tokens

    def budget(limit: float) -> Budget:
        return Budget("generator", "m", limit, prices, "synthesize/x/generator", cache)

    first = budget(0.2)
    with pytest.raises(CostLimitReached, match="raise generator.max_cost_usd and rerun"):
        make_generator(model, cache).with_stop_rules(first).generate(requests)
    sent = server.state.requests
    assert 0 < sent < len(requests) and first.spent() <= 0.2
    done = make_generator(model, cache).with_stop_rules(budget(10.0)).generate(requests)
    assert len(done) == 8 and server.state.requests == 8  # the first ones came from the cache
    assert sum(c.cached for c in done) == sent


def score_rows(rows: list[tuple[int, str, float | None, str]]) -> pa.Table:
    return pa.Table.from_pylist(
        [
            {
                "question_id": q,
                "step": 1,
                "action": a,
                "score": s,
                "judge_status": "ok" if s is not None else "failed",
                "judge_error": "" if s is not None else f"no score in the judge's reply {r!r}",
                "judge_reply": r,
                "judge_method": "text",
                "judge_prompt_tokens": 10,
                "judge_completion_tokens": 1,
                "judge_cached": False,
            }
            for q, a, s, r in rows
        ],
        schema=SCORES_SCHEMA,
    )


def test_a_question_whose_judgements_all_failed_stops_and_the_run_goes_on():
    cfg = load_config(None, ["rollout.actions=[calculator, cot]", "rollout.viable_threshold=5"])
    scores = score_rows(
        [
            (1, "calculator", None, "C. 99.09"),
            (1, "cot", None, "hmm"),
            (2, "calculator", 7.0, "7"),
            (2, "cot", None, "??"),
        ]
    )
    candidates = pa.Table.from_pylist(
        [
            {
                "question_id": q,
                "action": a,
                "thought": "t",
                "tool_input": "1+1",
                "status": "ok",
                "output": "2",
                "error": "",
            }
            for q in (1, 2)
            for a in ("calculator", "cot")
        ]
    )
    stops = judge_stops(1, scores).to_pylist()
    assert [s["question_id"] for s in stops] == [1]
    assert stops[0]["judge_replies"] == ["calculator: C. 99.09", "cot: hmm"]
    assert "every judgement failed" in stops[0]["reason"]
    states = initial_states([1, 2])
    selected, states = advance_trajectories(cfg, 1, candidates, scores, states, Counter())
    assert selected.column("question_id").to_pylist() == [2]  # a failed judgement is never 0
    assert {s["question_id"]: s["done"] for s in states.to_pylist()} == {
        1: True,
        2: False,
    }  # 2 goes on
    _, run = summarize(cfg.rollout.actions, selected.to_pylist(), [], scores.to_pylist(), 5, "m")
    row = run.to_pylist()[0]
    assert row["judge_failure_rate"] == 0.75 and row["stopped_questions"] == 1


def test_spark_check_judge_against_the_loopback_server(server, tmp_path, tiny_model_dir, capsys):
    server.state.reply_fn = rubric
    server.state.logprobs_fn = lambda messages: {rubric(messages): 0.9, "5": 0.1}
    # the calibration after a usable judge runs on the tiny model (the demo model's takes
    # minutes on 2 cores; what it measures is test_dry_run_calibrates_...'s)
    gen = [f"generator.name={tiny_model_dir}", "generator.device=cpu", "training.quantization=none"]
    result = runner.invoke(
        app, ["check", "judge", *cli_cfg(tmp_path, server, *gen)], terminal_width=120
    )
    with capsys.disabled():
        print("\n$ spark check judge (loopback, logprobs on)\n" + result.output)
    assert result.exit_code == 0, result.output
    assert "logprobs:           yes" in result.output and "6/6 (100%)" in result.output
    assert (
        "good above bad:     3/3" in result.output and "verdict:            usable" in result.output
    )
    assert "synthesize" in result.output and "judge: openai:loopback-judge" in result.output
    assert "estimated wall time" in result.output  # calibrated with the judge's latency

    server.reset()
    server.state.default_reply = "C. 99.09"  # no logprobs, no structured output, no score
    result = runner.invoke(app, ["check", "judge", *cli_cfg(tmp_path, server)], terminal_width=120)
    assert result.exit_code == 1
    assert "NOT USABLE" in result.output and "structured output:  no" in result.output


def test_spark_check_generator_against_the_loopback_server(server, tmp_path):
    gen = [
        "generator.backend=openai",
        "generator.name=loopback-gen",
        f"generator.base_url={server.base_url}",
    ]
    result = runner.invoke(app, ["check", "generator", *cli_cfg(tmp_path, server, *gen)])
    assert result.exit_code == 0, result.output
    assert "generator: openai:loopback-gen" in result.output and "2/2 (100%)" in result.output
    server.state.inject = [400, 400, 400, 400, 400, 400]  # probes and both requests refused
    result = runner.invoke(app, ["check", "generator", *cli_cfg(tmp_path, server, *gen)])
    assert result.exit_code == 1 and "HTTP 400" in result.output


def test_dry_run_plans_every_stage_without_calling_a_model(server, tmp_path):
    result = runner.invoke(
        app,
        ["run", "--dry-run", "--no-calibration"]
        + cli_cfg(tmp_path, server, "generator.max_cost_usd=1"),
        terminal_width=160,
    )
    assert result.exit_code == 0, result.output
    assert server.state.requests == 0
    for stage in ("synthesize", "evaluate", "ingest", "label", "train"):
        assert stage in result.output
    assert "14 train / 14 eval questions" in result.output and "$" in result.output
    assert "estimated wall time" not in result.output


def test_dry_run_calibrates_and_estimates_the_time_of_every_stage(
    server, tmp_path, tiny_model_dir, capsys
):
    server.state.reply_fn = rubric
    server.state.logprobs_fn = lambda messages: {rubric(messages): 0.9, "5": 0.1}
    gen = [f"generator.name={tiny_model_dir}", "generator.device=cpu", "training.quantization=none"]
    result = runner.invoke(
        app, ["run", "--dry-run", *cli_cfg(tmp_path, server, *gen)], terminal_width=200
    )
    with capsys.disabled():
        print("\n$ spark run --dry-run (calibrated)\n" + result.output)
    assert result.exit_code == 0, result.output
    assert server.state.requests > 0  # the judge's preflight: its latency
    table = result.output.split("estimated wall time")[1]
    for stage in ("ingest", "synthesize", "label", "train", "evaluate", "total"):
        line = next(row for row in table.splitlines() if f" {stage} " in row)
        assert re.search(r"\d+(\.\d)? (s|min|h)", line), line
    assert "14 questions x 1 steps x 9 candidates" in table
    assert "prompt tokens/s" in result.output and "calls/s" in result.output


def cfg_sets(tmp_path, server, model_dir: str) -> list[str]:
    return [
        f"runtime.runs_dir={tmp_path / 'runs'}",
        f"generator.name={model_dir}",
        "data.categories=[math]",
        "data.per_category=4",  # 2 train questions
        "rollout.actions=[calculator, cot]",
        "rollout.thought_tokens=8",
        "rollout.input_tokens=6",
        "rollout.shards=1",  # one shard: the order of the judgements is fixed
        "judge.backend=openai",
        "judge.name=loopback-judge",
        f"judge.base_url={server.base_url}",
        "judge.attempts=1",
        "judge.concurrency=1",
    ]


@pytest.mark.usefixtures("prefect_harness")
def test_synthesis_stops_cleanly_on_a_failing_judge_and_resumes(server, tiny_model_dir, tmp_path):
    from flows.synthesize import synthesize

    def cfg(*extra: str):
        return load_config(
            "configs/demo.yaml", [*cfg_sets(tmp_path, server, tiny_model_dir), *extra]
        )

    server.state.default_reply = "C. 99.09"
    sets = [a for s in cfg_sets(tmp_path, server, tiny_model_dir) for a in ("--set", s)]
    result = runner.invoke(app, ["synthesize", "-c", "configs/demo.yaml", *sets])
    assert result.exit_code == 2 and "Traceback" not in result.output  # the preflight stops it
    assert "error:" in result.output and "failed its preflight check" in result.output
    assert "'C. 99.09'" in result.output and "judge.preflight=false" in result.output

    state = synthesize(cfg("judge.preflight=false", "judge.failure_window=2"), return_state=True)
    assert state.is_failed() and state.name == "Stopped"
    assert "failed 2 of its first 2 judgements" in state.message
    judged = server.state.requests

    server.state.default_reply = "7"  # a judge that scores: the same stage resumes
    state = synthesize(cfg("judge.preflight=false", "judge.failure_window=2"), return_state=True)
    assert state.is_completed()
    assert server.state.requests == judged + 4  # the 2 failed ones again, the 2 never sent


@pytest.mark.usefixtures("prefect_harness")
def test_evaluation_stops_at_a_paid_policys_cost_limit_and_resumes(
    server, tiny_model_dir, tmp_path
):
    """A paid policy (an OpenAI-compatible extra model) is evaluated under its cost limit:
    the stage ends 'Stopped' with the message, and a higher limit resumes from the cache."""
    from flows.evaluate import evaluate

    def cfg(limit: float):
        paid = (
            f'{{"backend": "openai", "name": "m", "base_url": "{server.base_url}", '
            f'"concurrency": 1, "max_cost_usd": {limit}, '
            '"price_per_1k_prompt": 1.0, "price_per_1k_completion": 1.0}'
        )
        return load_config(
            "configs/demo.yaml",
            [
                *cfg_sets(tmp_path, server, tiny_model_dir),
                "evaluation.policies=[]",
                "evaluation.steps=1",
                f"evaluation.extra_models={{paid: {paid}}}",
            ],
        )

    server.state.default_reply = "cot"
    state = evaluate(cfg(0.8), return_state=True)
    assert state.is_failed() and state.name == "Stopped", state.message
    assert "evaluation.extra_models.paid.max_cost_usd" in state.message
    sent = server.state.requests
    assert sent > 0
    paid_before = list(server.state.bodies)
    state = evaluate(cfg(1000.0), return_state=True)
    assert state.is_completed()
    assert "| paid |" in open(state.result().report).read()
    # resumed: no request finished under the first limit was sent again
    again = [b for b in server.state.bodies[len(paid_before) :] if b in paid_before]
    assert again == [] and server.state.requests > sent
