"""Self-refinement of failed tool calls (rollout.tool_retries) through the real sandbox: a
scripted OpenAI-compatible server on loopback writes a broken Python input, then — shown the
error in the repair prompt — a fixed one; the judge must see the repaired call."""

from __future__ import annotations

import json

import pytest

from spark_core.evaluation.policy_rollout import EVAL_ROWS_SCHEMA, evaluate_policy
from spark_core.evaluation.repairs import repair_lines, repair_table
from spark_core.models.generator import make_generator
from spark_core.models.judge.judge import make_judge
from spark_core.models.stop_rules import Budget
from spark_core.protocol import Question
from spark_core.synthesis.repair import REPAIR_QUESTION
from spark_core.synthesis.rollout import CANDIDATES_SCHEMA, rollout_step
from spark_core.synthesis.summary import markdown, summarize
from tasks.tools import sandbox_for

BROKEN, FIXED = "print(6 * 7", "print(6 * 7)"
REPAIR_MARK = REPAIR_QUESTION.split("\n")[1][:24]  # "That tool call failed. W"
QUESTION = Question(7, "What is 6 times 7?", ("41", "42", "43"), "math", "B")


THOUGHT = "I multiply the numbers in Python."


def script(server, repairs_work: bool) -> None:
    """The scripted model: a judge that gives 9 to an observation of 42 and 2 otherwise; a
    policy whose first reply is its thought, that picks python, writes a broken program and
    — shown the error in the repair prompt — the fixed one (or the broken one again).
    Synthesis' input requests reach an OpenAI server as the bare state (the prefilled thought
    and action are the hf backend's), so every reply to the state is the broken program."""

    def reply(messages: list[dict]) -> str:
        last = messages[-1]["content"]
        if messages[0]["content"].startswith("You grade one step"):
            return "9" if "Observation: 42" in last else "2"
        if REPAIR_MARK in last:
            return f"Action Input: {FIXED}" if repairs_work else BROKEN  # the label is cut
        if last.startswith("Which action is next?"):
            return "python"
        return BROKEN

    server.state.reply_fn = reply
    server.state.replies = [THOUGHT]


@pytest.fixture
def server(loopback_openai):
    loopback_openai.reset()
    return loopback_openai


def _cfg(run_config, server, retries: int, *extra: str):
    url = server.base_url
    return run_config(
        "generator.backend=openai",
        "generator.name=policy",
        f"generator.base_url={url}",
        "judge.backend=openai",
        "judge.name=judge",
        f"judge.base_url={url}",
        "judge.attempts=1",
        "judge.scoring=text",
        "rollout.actions=[python, cot]",
        f"rollout.tool_retries={retries}",
        "evaluation.steps=1",
        *extra,
    )


def _synthesize(cfg, server, repairs_work: bool = True):
    script(server, repairs_work)
    generator = make_generator(cfg.generator, None)
    candidates, scores = rollout_step(
        cfg,
        1,
        [QUESTION],
        {QUESTION.question_id: ""},
        generator,
        make_judge(cfg.judge, None),
        sandbox_for(cfg),
    )
    assert candidates.schema.equals(CANDIDATES_SCHEMA)
    by_action = {r["action"]: r for r in candidates.to_pylist()}
    judged = {r["action"]: r["score"] for r in scores.to_pylist()}
    judge_prompts = [
        m[-1]["content"] for m in server.state.log if m[0]["content"][:9] == "You grade"
    ]
    repair_prompts = [m for m in server.state.log if REPAIR_MARK in m[-1]["content"]]
    return by_action, judged, judge_prompts, repair_prompts, generator


def test_a_retry_repairs_a_broken_input_before_the_judge_sees_it(run_config, server):
    cfg = _cfg(run_config, server, 1)
    python, judged, judge_prompts, repair_prompts, generator = _synthesize(cfg, server)
    row = python["python"]
    assert (row["tool_input"], row["status"], row["output"].strip()) == (FIXED, "ok", "42")
    assert row["repair_attempts"] == 1 and row["repair_succeeded"] is True
    assert row["failed_input"] == BROKEN and row["failed_error"].startswith("error: SyntaxError")
    assert python["cot"]["repair_attempts"] == 0  # cot never fails
    # the repair prompt showed the failed call and its error, and asked for an input only
    (repair,) = repair_prompts
    assert f"Action: python\nAction Input: {BROKEN}" in repair[-2]["content"]
    assert "SyntaxError" in repair[-1]["content"]
    # the judge saw the repaired call and its observation, never the broken one
    (python_prompt,) = [p for p in judge_prompts if "Action: python" in p]
    assert f"Action Input: {FIXED}\nObservation: 42" in python_prompt
    assert "SyntaxError" not in "".join(judge_prompts)
    assert judged["python"] == 9.0
    # the repair is a generator call like the others: counted in its usage (thought, two
    # inputs, one repair)
    assert generator.usage.calls == 4
    per_action, run = summarize(["python", "cot"], [], list(python.values()), [], 4.0, "judge")
    stats = {a["action"]: a for a in per_action.to_pylist()}
    assert (stats["python"]["repairs_attempted"], stats["python"]["repairs_succeeded"]) == (1, 1)
    assert stats["python"]["repair_rate"] == 1.0 and stats["cot"]["repair_rate"] is None
    table = markdown(per_action, run)  # the synthesis summary's repaired column
    assert "| 1/1 (100%) |" in table and table.rstrip().endswith("| – |")


def test_no_retries_change_nothing_and_a_failed_repair_keeps_trying(run_config, server):
    off, judged, judge_prompts, repair_prompts, _ = _synthesize(_cfg(run_config, server, 0), server)
    assert repair_prompts == [] and judged["python"] == 2.0
    row = off["python"]
    assert (row["tool_input"], row["status"]) == (BROKEN, "error")
    assert row["repair_attempts"] is None and row["failed_input"] is None
    assert any(
        f"Action Input: {BROKEN}\nObservation: error: SyntaxError" in p for p in judge_prompts
    )

    server.reset()
    cfg = _cfg(run_config, server, 2)
    stuck, _, _, repair_prompts, _ = _synthesize(cfg, server, repairs_work=False)
    row = stuck["python"]
    assert len(repair_prompts) == 2  # both retries, each shown the latest error
    assert (row["repair_attempts"], row["repair_succeeded"], row["status"]) == (2, False, "error")


def test_evaluation_repairs_at_the_step_under_the_cost_limit(run_config, server):
    cfg = _cfg(run_config, server, 1)
    script(server, True)
    budget = Budget("generator", "policy", 100.0, (1.0, 1.0), "test")
    generator = make_generator(cfg.generator, None).with_stop_rules(budget)
    table = evaluate_policy(cfg, "base", [QUESTION], generator, sandbox_for(cfg))
    assert table.schema.equals(EVAL_ROWS_SCHEMA)
    (row,) = table.to_pylist()
    assert row["actions"] == ["python"] and row["tool_calls"] == 1 and row["tool_errors"] == 0
    assert (row["repairs_attempted"], row["repairs_succeeded"]) == (1, 1)
    assert (row["step_repairs"], row["step_repaired"]) == ([1], [True])
    assert f"Action Input: {FIXED}\nObservation: 42" in row["transcript"]
    # the repair went through the cost limit: its tokens are in the spend
    repair = next(b for b in server.state.bodies if REPAIR_MARK in json.dumps(b["messages"]))
    assert repair["max_tokens"] == cfg.rollout.input_tokens
    assert generator.usage.calls == 3  # the step, its repair, the final-answer prompt
    usage = generator.usage
    assert budget.spent() == pytest.approx((usage.prompt_tokens + usage.completion_tokens) / 1000)
    (tool,) = repair_table([row], ["python"]).to_pylist()
    assert tool == {
        "policy": "base",
        "tool": "python",
        "calls": 1,
        "attempted": 1,
        "succeeded": 1,
        "rate": 1.0,
    }
    assert "| base | python | 1 | 1 | 1 | 100% |" in repair_lines(repair_table([row], ["python"]))


def test_repairs_on_the_local_backend_are_batched_and_deterministic(run_config, tiny_model_dir):
    """The hf path (repair prompt with the "Action Input:" prefill), synthesis and evaluation:
    a tiny random model's inputs fail, the repairs run, and a second run is identical."""
    cfg = run_config(
        f"generator.name={tiny_model_dir}",
        f"judge.name={tiny_model_dir}",
        "rollout.actions=[calculator, python, chemistry, cot]",
        "rollout.thought_tokens=8",
        "rollout.input_tokens=6",
        "rollout.tool_retries=1",
        "evaluation.steps=1",
    )
    questions = [QUESTION, Question(8, "What is 2 + 2?", ("3", "4"), "math", "B")]
    generator, judge = make_generator(cfg.generator, None), make_judge(cfg.judge, None)
    runs = [
        rollout_step(
            cfg, 1, questions, dict.fromkeys((7, 8), ""), generator, judge, sandbox_for(cfg)
        )
        for _ in range(2)
    ]
    first, second = (c.drop_columns(["latency_ms"]) for c, _ in runs)
    assert first.equals(second) and runs[0][1].equals(runs[1][1])
    tried = [r for r in first.to_pylist() if r["repair_attempts"]]
    assert tried and all(r["failed_input"] is not None for r in tried)
    assert all(r["repair_attempts"] == 0 for r in first.to_pylist() if r["action"] == "cot")
    rows = [
        evaluate_policy(cfg, "base", questions, generator, sandbox_for(cfg)).to_pylist()
        for _ in range(2)
    ]
    assert rows[0] == rows[1]
    for row in rows[0]:
        assert len(row["step_repairs"]) == len(row["step_repaired"]) == len(row["actions"])


def test_the_dry_run_plan_counts_every_possible_repair(run_config):
    from spark_core.run_plan import plan_evaluation, plan_synthesis

    plans = {}
    for retries in (0, 2):
        cfg = run_config(f"rollout.tool_retries={retries}", "rollout.steps=3", "evaluation.steps=2")
        plans[retries] = (plan_synthesis(cfg, [QUESTION])[0], plan_evaluation(cfg, [QUESTION])[0])
    tools = len(cfg.rollout.actions) - 1  # every action but cot
    assert plans[2][0].calls - plans[0][0].calls == 2 * tools * 3
    assert plans[2][1].calls - plans[0][1].calls == 2 * 2
    assert plans[2][0].prompt_tokens > plans[0][0].prompt_tokens
