"""The policy alone picks every step — no judge — with the same action protocol, tools and
sandbox as synthesis, for up to ``evaluation.steps`` steps; the final answer is read with
MMLU-Pro's cascade, and a question with no readable answer gets MMLU-Pro's seeded guess."""

from __future__ import annotations

import random
from typing import Any

import pyarrow as pa

from spark_core.action_format import (
    ANSWER,
    COT,
    final_answer,
    parse_step,
    render_step,
    trajectory_entry,
)
from spark_core.answers import LETTERS, extract_answer
from spark_core.config import RunConfig
from spark_core.models.calls import Generator
from spark_core.models.requests import ChatRequest
from spark_core.progress import publish
from spark_core.rollout import Question, policy_messages
from spark_core.step_selection import answer_request, observation_text
from spark_core.tools.batch import ToolCall, run_batch
from spark_core.tools.sandbox import Sandbox

CODE_VERSION = "1"
EVAL_ROWS_SCHEMA = pa.schema(
    [
        pa.field("policy", pa.string(), nullable=False),
        pa.field("question_id", pa.int64(), nullable=False),
        pa.field("category", pa.string(), nullable=False),
        pa.field("answer", pa.string(), nullable=False),
        pa.field("final_answer", pa.string(), nullable=False),
        pa.field("correct", pa.bool_(), nullable=False),
        pa.field("no_answer", pa.bool_(), nullable=False),
        pa.field("steps", pa.int32(), nullable=False),
        pa.field("actions", pa.list_(pa.string()), nullable=False),
        pa.field("tool_calls", pa.int32(), nullable=False),
        pa.field("tool_errors", pa.int32(), nullable=False),
        pa.field("parse_problems", pa.int32(), nullable=False),
        pa.field("transcript", pa.string(), nullable=False),
    ]
)


def _letter(text: str, n_options: int) -> str | None:
    letter = extract_answer(text)
    return letter if letter is not None and LETTERS.index(letter) < n_options else None


def evaluate_policy(
    cfg: RunConfig, policy: str, questions: list[Question], generator: Generator, sandbox: Sandbox
) -> pa.Table:
    """Roll the policy out on every question; one row per question."""
    actions = cfg.rollout.actions
    state: dict[int, dict[str, Any]] = {
        q.question_id: {
            "trajectory": "",
            "actions": [],
            "answer": None,
            "tool_calls": 0,
            "tool_errors": 0,
            "problems": 0,
            "steps": 0,
        }
        for q in questions
    }
    by_id = {q.question_id: q for q in questions}
    what = f"evaluate {policy} (steps)"
    for step in range(1, cfg.evaluation.steps + 1):
        publish(what, step - 1, cfg.evaluation.steps + 1)
        active = [q for q in questions if state[q.question_id]["answer"] is None]
        if not active:
            break
        completions = generator.generate(
            [
                ChatRequest(
                    policy_messages(q, state[q.question_id]["trajectory"], actions),
                    max_new_tokens=cfg.rollout.thought_tokens + cfg.rollout.input_tokens,
                    temperature=0.0,
                    prefill="Thought:",
                    stop=("\nObservation",),
                )
                for q in active
            ]
        )
        steps, calls = {}, []
        for q, completion in zip(active, completions, strict=True):
            parsed = parse_step("Thought:" + completion.text, actions)
            s = state[q.question_id]
            s["steps"] = step
            s["problems"] += len(parsed.problems)
            s["actions"].append(parsed.action)
            steps[q.question_id] = parsed
            if parsed.action == ANSWER:
                s["answer"] = _letter(f"the answer is {parsed.action_input}", len(q.options))
            elif parsed.action != COT:
                calls.append(ToolCall(q.question_id, step, parsed.action, parsed.action_input))
        results = {r["question_id"]: r for r in run_batch(calls, sandbox, cfg.tools.parallelism)}
        for qid, parsed in steps.items():
            s = state[qid]
            if parsed.action == ANSWER:
                continue
            if qid in results:
                row = results[qid]
                s["tool_calls"] += 1
                s["tool_errors"] += row["status"] != "ok"
            else:  # cot: the reasoning is the observation
                row = {"action": COT, "status": "ok", "output": parsed.action_input, "error": ""}
            observation = observation_text(row, cfg.rollout.observation_chars)
            entry = trajectory_entry(
                render_step(parsed.thought, parsed.action, parsed.action_input), observation
            )
            s["trajectory"] = f"{s['trajectory']}\n{entry}" if s["trajectory"] else entry
            stated = final_answer(f"{parsed.thought}\n{parsed.action_input}")
            if stated is not None and LETTERS.index(stated) < len(by_id[qid].options):
                s["answer"] = stated
    publish(what, cfg.evaluation.steps, cfg.evaluation.steps + 1)
    pending = [q for q in questions if state[q.question_id]["answer"] is None]
    finals = generator.generate(
        [answer_request(cfg, q, state[q.question_id]["trajectory"]) for q in pending]
    )
    for q, completion in zip(pending, finals, strict=True):
        state[q.question_id]["answer"] = _letter(
            f"the answer is ({completion.text.strip()})", len(q.options)
        )
    publish(what, cfg.evaluation.steps + 1, cfg.evaluation.steps + 1)
    rows = []
    for q in questions:
        s = state[q.question_id]
        letter, no_answer = s["answer"], s["answer"] is None
        if no_answer:
            rng = random.Random(f"guess:{cfg.evaluation.seed}:{policy}:{q.question_id}")
            letter = LETTERS[rng.randrange(len(q.options))]
        rows.append(
            {
                "policy": policy,
                "question_id": q.question_id,
                "category": q.category,
                "answer": q.answer,
                "final_answer": letter,
                "correct": letter == q.answer,
                "no_answer": no_answer,
                "steps": s["steps"],
                "actions": s["actions"],
                "tool_calls": s["tool_calls"],
                "tool_errors": s["tool_errors"],
                "parse_problems": s["problems"],
                "transcript": s["trajectory"],
            }
        )
    return pa.Table.from_pylist(rows, schema=EVAL_ROWS_SCHEMA)
