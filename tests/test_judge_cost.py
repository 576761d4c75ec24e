"""What the judge costs: cache-friendly per-candidate prompts and the cached prompt tokens a
server reports, and batch jobs through the Batch API (resumed after a kill, an expired job
falling back to direct calls under the cost limit) — against a real loopback HTTP server."""

from __future__ import annotations

import pytest

from spark_core.config import JudgeConfig
from spark_core.models.judge.judge import make_judge
from spark_core.models.judge.prompt import JudgeItem, judge_messages
from spark_core.models.prices import model_rates, rates_for
from spark_core.models.response_cache import ResponseCache
from spark_core.models.stop_rules import Budget, CostLimitReached, estimate_prompt_tokens


@pytest.fixture
def server(loopback_openai):
    loopback_openai.reset()
    return loopback_openai


def step(n: int, question: str = "What is 12 times 0.35?") -> list[JudgeItem]:
    return [
        JudgeItem(
            question,
            ("3.50", "4.20", "4.50"),
            "Thought: multiply.",
            f"tool{i}",
            f"input {i}",
            f"output {i}",
            thought="Multiply the price by the count.",
        )
        for i in range(n)
    ]


def judge_cfg(server, **kw) -> JudgeConfig:
    return JudgeConfig(backend="openai", name="m", base_url=server.base_url, scoring="text", **kw)


def test_per_candidate_prompts_put_the_shared_part_first(server):
    prompts = ["\n".join(c for _, c in judge_messages(item)) for item in step(3)]
    shared = 0
    while all(p[shared] == prompts[0][shared] for p in prompts):
        shared += 1
    # the prompts of a state differ only from the candidate's action on
    assert prompts[0][:shared].endswith("Thought: Multiply the price by the count.\nAction: tool")
    assert prompts[0][:shared].count("What is 12 times 0.35?") == 1


def test_cached_prompt_tokens_from_the_server_are_recorded_and_priced(server):
    server.state.prompt_cache = True
    server.state.default_reply = "7"
    cfg = judge_cfg(
        server,
        concurrency=1,  # in order: the first call fills the server's cache
        price_per_1k_prompt=1.0,
        price_per_1k_completion=2.0,
        price_per_1k_cached_prompt=0.25,
    )
    judge = make_judge(cfg, None)
    judgements = judge.score(step(3))
    words = [[w for _, c in judge_messages(i) for w in c.split()] for i in step(3)]
    prefix = next(n for n in range(len(words[0])) if words[0][n] != words[1][n])
    assert [j.cached_prompt_tokens for j in judgements] == [0, prefix, prefix]
    prompt = sum(len(w) for w in words)
    assert judge.usage.summary()["cached_prompt_tokens"] == 2 * prefix
    assert f", {2 * prefix:,} prompt tokens from the provider's cache, $" in judge.usage.line()
    assert judge.usage.cost_usd == pytest.approx(
        ((prompt - 2 * prefix) * 1.0 + 2 * prefix * 0.25 + 3 * 2.0) / 1000
    )


def test_known_models_get_their_cached_and_batch_prices():
    rates = rates_for("gpt-4o")
    assert (rates.prompt, rates.cached_prompt, rates.prompt_batch, rates.completion_batch) == (
        0.0025,
        0.00125,
        0.00125,
        0.005,
    )
    unknown = rates_for("my-model", 1.0, 2.0)  # no known discount: none assumed
    assert (unknown.cached_prompt, unknown.prompt_batch, unknown.completion_batch) == (1, 1, 2)
    cfg = JudgeConfig(
        name="my-model",
        price_per_1k_prompt=1,
        price_per_1k_completion=2,
        price_per_1k_prompt_batch=0.4,
    )
    assert model_rates(cfg).prompt_batch == 0.4
    assert rates.cost(1000, 100, cached_prompt=400) == pytest.approx(
        (600 * 0.0025 + 400 * 0.00125 + 100 * 0.01) / 1000
    )
    assert rates.cost(1000, 100, batch=True) == pytest.approx((1000 * 0.00125 + 100 * 0.005) / 1000)


class Killed(BaseException):
    """What a killed process's poll loop sees: it never returns."""


def test_a_batch_killed_mid_poll_resumes_without_a_second_submission(server, tmp_path):
    server.state.default_reply = "8"
    server.state.batch_polls_to_finish = 3
    cache = ResponseCache(tmp_path / "responses.sqlite")
    cfg = judge_cfg(server, batch=True, price_per_1k_prompt=1.0, price_per_1k_completion=2.0)
    judge = make_judge(cfg, cache)
    judge.batch.poll_min_s = 0.0

    def kill(seconds: float) -> None:
        raise Killed

    judge.batch.sleep = kill
    with pytest.raises(Killed):
        judge.score(step(4))
    assert (server.state.uploads, server.state.batches_created, server.state.batch_polls) == (
        1,
        1,
        1,
    )

    restarted = make_judge(cfg, cache)  # a fresh process: the batch id is in the run's cache
    restarted.batch.poll_min_s = 0.0
    judgements = restarted.score(step(4))
    assert (server.state.uploads, server.state.batches_created) == (1, 1)
    assert server.state.batch_polls == 3 and server.state.requests == 0  # no direct call
    assert server.state.batch_requests == 4
    assert [(j.score, j.batch) for j in judgements] == [(8.0, True)] * 4
    usage = restarted.usage.summary()
    assert usage["batch_prompt_tokens"] == usage["prompt_tokens"] > 0
    # model "m" has no known batch discount and the config names no batch price: none assumed
    assert restarted.usage.cost_usd == pytest.approx(
        (usage["prompt_tokens"] * 1.0 + usage["completion_tokens"] * 2.0) / 1000
    )
    assert all(j.cached for j in make_judge(cfg, cache).score(step(4)))  # from the cache
    assert server.state.batch_polls == 3


def test_per_state_batch_is_one_request_per_state(server, tmp_path):
    server.state.default_reply = '{"1": 9, "2": 4}'
    cfg = judge_cfg(server, batch=True, mode="per_state")
    judge = make_judge(cfg, ResponseCache(tmp_path / "r.sqlite"))
    judge.batch.poll_min_s = 0.0
    judgements = judge.score(step(2) + step(2, "What is 3 hours in seconds?"))
    assert server.state.batch_requests == 2 and server.state.requests == 0
    assert [j.score for j in judgements] == [9, 4, 9, 4]
    assert {j.method for j in judgements} == {"text_state"} and all(j.batch for j in judgements)


def test_an_expired_batch_falls_back_to_direct_calls_under_the_cost_limit(server, tmp_path):
    items = step(4)
    worst = max(estimate_prompt_tokens(c for _, c in judge_messages(i)) for i in items)
    server.state.usage_tokens = (worst, 0)  # every call bills its worst case
    server.state.default_reply = "6"
    server.state.batch_outcome, server.state.batch_partial = "expired", 1
    cache = ResponseCache(tmp_path / "responses.sqlite")
    cfg = judge_cfg(
        server,
        batch=True,
        attempts=1,
        concurrency=1,
        price_per_1k_prompt=1.0,
        price_per_1k_completion=0.0,
        price_per_1k_prompt_batch=0.5,
        price_per_1k_completion_batch=0.0,
        max_cost_usd=3.2 * worst / 1000,  # the job (4 x 0.5) fits; 1 + 2 direct calls do not
    )
    judge = make_judge(cfg, cache)
    judge.batch.poll_min_s = 0.0
    budget = Budget.for_model(cfg, "judge", "synthesize/judge", cache)
    limited = judge.with_stop_rules(budget, None)
    with pytest.raises(CostLimitReached, match="judge.max_cost_usd"):
        limited.score(items)
    assert server.state.batches_created == 1 and server.state.batch_requests == 1
    assert server.state.requests == 2  # direct: 0.5 + 1 + 1 spent; a third would pass 3.2
    assert budget.spent() == pytest.approx(2.5 * worst / 1000)
    assert len(cache) == 3 + 1  # three judgements checkpointed, and the batch job's record


def test_summary_reports_cached_and_batch_tokens_and_their_cost():
    from spark_core.synthesis.summary import summarize

    def row(qid, prompt, cached, batch, from_cache=False):
        return {
            "question_id": qid,
            "step": 1,
            "action": "calculator",
            "score": 7.0,
            "judge_status": "ok",
            "judge_prompt_tokens": prompt,
            "judge_completion_tokens": 10,
            "judge_cached": from_cache,
            "judge_cached_prompt_tokens": cached,
            "judge_batch": batch,
        }

    scores = [row(1, 1000, 0, False), row(2, 1000, 600, False), row(3, 2000, 0, True)]
    scores.append(row(4, 5000, 0, False, from_cache=True))  # the response cache: free
    _, run = summarize(["calculator"], [], [], scores, 6.0, "gpt-4o")
    r = run.to_pylist()[0]
    assert (r["judge_cached_prompt_tokens"], r["judge_batch_prompt_tokens"]) == (600, 2000)
    assert r["judge_batch_completion_tokens"] == 10
    direct = (1400 * 0.0025 + 600 * 0.00125 + 20 * 0.01) / 1000
    batch = (2000 * 0.00125 + 10 * 0.005) / 1000
    assert r["judge_cost_usd"] == pytest.approx(direct + batch)


def test_judge_options_are_priced_from_the_same_tokens(run_config):
    from spark_core.judge_costs import cheapest, judge_costs
    from spark_core.protocol import Question

    cfg = run_config("judge.backend=openai", "judge.name=gpt-4o", "rollout.steps=2")
    questions = [Question(1, "What is 2+2? " * 400, ("3", "4"), "math", "B")]
    costs = {c.option.name: c for c in judge_costs(cfg, questions)}
    one, state = costs["per_candidate"], costs["per_state"]
    n = len(cfg.rollout.actions)
    assert (one.calls, state.calls) == (2 * n, 2)
    assert state.prompt_tokens < one.prompt_tokens / 3  # the shared context once, not n times
    assert costs["per_candidate + batch"].cost_usd == pytest.approx(one.cost_usd / 2)
    cached = costs["per_candidate + provider cache"]
    assert cached.cached_prompt_tokens % 128 == 0 and cached.cached_prompt_tokens > 0
    assert cached.cost_usd == pytest.approx(
        one.cost_usd - cached.cached_prompt_tokens * 0.00125 / 1000
    )
    assert cheapest(list(costs.values())).option.name == "per_state + batch"


def test_dry_run_prices_every_judge_option_and_the_recommended_one_is_within_budget():
    from rich.console import Console
    from typer.testing import CliRunner

    from flows.cli import app
    from flows.cli_judge_costs import judge_options_table
    from flows.cli_questions import planned_questions
    from spark_core.config import load_config
    from spark_core.run_plan import plan_synthesis

    sets = ["judge.mode=per_state", "judge.batch=true"]  # the README's recommendation
    cfg = load_config("configs/paper.yaml", sets)
    train, _, _ = planned_questions(cfg)
    _, judge = plan_synthesis(cfg, train)
    assert judge.calls == len(train) * cfg.rollout.steps and judge.cost_usd <= 150
    console = Console(width=200, record=True)
    console.print(judge_options_table(cfg, train)[0])
    text = console.export_text()
    for option in ("per_candidate ", "provider cache", "per_state ", "per_candidate + batch"):
        assert option in text
    assert "per_state + batch (configured, cheapest)" in text
    args = ["run", "--dry-run", "-c", "configs/paper.yaml"]
    result = CliRunner().invoke(app, [*args, *[a for s in sets for a in ("--set", s)]])
    assert result.exit_code == 0 and "cost by option" in result.output


def _pilot_summary(cfg, questions: int, steps: int, calls: int, prompt: int, completion: int):
    """A synthesis summary as an earlier run under this run name would leave it."""
    import pyarrow as pa

    from spark_core.artifacts import ArtifactStore
    from spark_core.synthesis.summary import RUN_SCHEMA

    row = {name: None for name in RUN_SCHEMA.names}
    row |= {"questions": questions, "steps": steps, "entropy_bits": 2.0}
    row |= {"normalized_entropy": 0.6, "fallback_rate": 0.1, "failed_judgements": 0}
    row |= {"judge_failure_rate": 0.0, "stopped_questions": 0, "judge_calls": calls}
    row |= {"judge_cached_calls": 0, "judge_prompt_tokens": prompt}
    row |= {"judge_completion_tokens": completion, "judge_cached_prompt_tokens": 0}
    row |= {"judge_batch_prompt_tokens": 0, "judge_batch_completion_tokens": 0}
    row |= {"generated_tokens": 100, "thought_names_tool_rate": 0.0}
    row |= {"thought_mismatch_rate": 0.0, "viable_rate_expected": 0.5}
    row |= {"viable_rate_integer": 0.5}
    config = cfg.section("rollout") | {"judge": cfg.judge.name, "judge_mode": cfg.judge.mode}
    store = ArtifactStore(cfg.runtime.artifacts_url())
    table = pa.Table.from_pylist([row], schema=RUN_SCHEMA)
    store.write(
        "synthesize/pilot0/summary_run", table, RUN_SCHEMA, stage="synthesize", config=config
    )


def test_the_dry_run_estimates_the_judge_cost_from_a_pilot_of_the_same_run(tmp_path):
    from rich.console import Console

    from flows.cli_judge_costs import judge_options_table
    from flows.cli_questions import planned_questions
    from spark_core.config import load_config
    from spark_core.judge_costs import judge_costs
    from spark_core.judge_estimate import estimated_costs, find_pilot

    cfg = load_config("configs/paper.yaml", [f"runtime.runs_dir={tmp_path}"])
    train, _, _ = planned_questions(cfg)
    assert find_pilot(cfg) is None
    console = Console(width=220, record=True)
    view, note = judge_options_table(cfg, train)
    assert "No estimate column" in note and "data.total=28" in note
    # a pilot of 28 questions that took 3 of the 5 steps on average, 2 completion tokens
    # and 1,500 prompt tokens per per_candidate call
    calls = 28 * 3 * 9
    _pilot_summary(cfg, 28, 28 * 3, calls, calls * 1500, calls * 2)
    other = load_config("configs/paper.yaml", [f"runtime.runs_dir={tmp_path}", "rollout.steps=4"])
    assert find_pilot(other) is None  # another rollout: no pilot of this one
    pilot = find_pilot(cfg)
    assert pilot.step_share == pytest.approx(0.6) and pilot.completion_tokens_per_call == 2
    bounds = {c.option: c for c in judge_costs(cfg, train)}
    for c in estimated_costs(cfg, train, pilot, train[:28]):
        bound = bounds[c.option]
        assert c.calls == round(bound.calls * 0.6)
        assert c.cost_usd < bound.cost_usd
        if c.option.name == "per_candidate":
            assert c.completion_tokens == round(c.calls * 2)
            rates = model_rates(cfg.judge)
            assert c.cost_usd == pytest.approx(rates.cost(c.prompt_tokens, c.completion_tokens))
            # the prompt tokens per call are the pilot's, up to the sample's mean length
            assert c.prompt_tokens / c.calls == pytest.approx(1500, rel=0.1)
    view, note = judge_options_table(cfg, train)
    console.print(view)
    text = console.export_text()
    assert "estimate" in text and "upper bound" in text
    assert "Estimate: from the pilot at" in note and "60% of the steps rolled" in note
