"""The barrier of a rollout step: every shard's candidates and judge scores are in, so select
one candidate per question over *all* shards at once (global usage counts, questions in a seeded
shuffled order; the rule is ``selection.py``), append the selected step and its observation to
the question's trajectory, and close the questions that stated a final answer. It is a barrier
because rarity is global: a shard cannot know what the others selected. After the last step every
open question is asked for its final answer (``rollout.final_answers``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict
from typing import Any

import pyarrow as pa

from spark_core.config import RunConfig
from spark_core.protocol import COT, final_answer, render_step, trajectory_entry
from spark_core.synthesis.selection import select_in_order
from spark_core.tools.base import ToolStatus

STATE_SCHEMA = pa.schema(
    [
        pa.field("question_id", pa.int64(), nullable=False),
        pa.field("trajectory", pa.string(), nullable=False),
        pa.field("steps_taken", pa.int32(), nullable=False),
        pa.field("done", pa.bool_(), nullable=False),
        pa.field("final_answer", pa.string()),
    ]
)
SELECTED_SCHEMA = pa.schema(
    [
        pa.field("question_id", pa.int64(), nullable=False),
        pa.field("step", pa.int32(), nullable=False),
        pa.field("action", pa.string(), nullable=False),
        pa.field("score", pa.float64(), nullable=False),
        pa.field("viable", pa.bool_(), nullable=False),
        pa.field("usage_before", pa.int64(), nullable=False),
        pa.field("total_before", pa.int64(), nullable=False),  # selections of any action before
        # usage of the most-used viable candidate before the selection (rewards.within_state_bonus)
        pa.field("max_viable_usage_before", pa.int64()),
        pa.field("trajectory_before", pa.string(), nullable=False),
        pa.field("completion", pa.string(), nullable=False),
        pa.field("observation", pa.string(), nullable=False),
        pa.field("final_answer", pa.string()),
        pa.field("behaviour_logprobs", pa.list_(pa.float32())),  # training/behaviour.py
    ]
)
USAGE_SCHEMA = pa.schema(
    [pa.field("action", pa.string(), nullable=False), pa.field("count", pa.int64(), nullable=False)]
)
STOPPED_SCHEMA = pa.schema(
    [
        pa.field("question_id", pa.int64(), nullable=False),
        pa.field("step", pa.int32(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("judge_replies", pa.list_(pa.string()), nullable=False),  # "action: reply"
    ]
)


def initial_states(question_ids: list[int]) -> pa.Table:
    rows = [
        {"question_id": q, "trajectory": "", "steps_taken": 0, "done": False, "final_answer": None}
        for q in sorted(question_ids)
    ]
    return pa.Table.from_pylist(rows, schema=STATE_SCHEMA)


def usage_table(usage: Counter) -> pa.Table:
    rows = [{"action": a, "count": c} for a, c in sorted(usage.items())]
    return pa.Table.from_pylist(rows, schema=USAGE_SCHEMA)


def observation_text(row: dict[str, Any], limit: int) -> str:
    text = row["output"] if row["status"] == ToolStatus.OK else f"{row['status']}: {row['error']}"
    text = " ".join(text.split()) if row["action"] == COT else text.strip()
    return text if len(text) <= limit else text[:limit] + " ..."


def judge_stops(step: int, scores: pa.Table) -> pa.Table:
    """The questions whose every candidate's judgement failed at ``step``: their rollout stops
    here, with the reason and what the judge replied (the run goes on without them)."""
    by_question: dict[int, list[dict[str, Any]]] = {}
    for row in scores.to_pylist():
        by_question.setdefault(row["question_id"], []).append(row)
    rows = [
        {
            "question_id": qid,
            "step": step,
            "reason": f"every judgement failed ({len(rows)} candidates): {rows[0]['judge_error']}",
            "judge_replies": [
                f"{r['action']}: {r['judge_reply'] or r['judge_error']}" for r in rows
            ],
        }
        for qid, rows in sorted(by_question.items())
        if all(r["score"] is None for r in rows)
    ]
    return pa.Table.from_pylist(rows, schema=STOPPED_SCHEMA)


def advance_trajectories(
    cfg: RunConfig,
    step: int,
    candidates: pa.Table,
    scores: pa.Table,
    states: pa.Table,
    usage: Counter,
) -> tuple[pa.Table, pa.Table]:
    """Select one candidate per active question; returns (selected, next states). ``usage``
    is updated in place. A question none of whose candidates could be judged is closed
    without a selection (``judge_stops`` records why)."""
    # a question with no judged candidate cannot be selected for: it leaves the rollout here
    stopped = set(judge_stops(step, scores).column("question_id").to_pylist())
    by_question: dict[int, dict[str, float | None]] = {}
    for row in scores.to_pylist():
        if row["question_id"] not in stopped:
            by_question.setdefault(row["question_id"], {})[row["action"]] = row["score"]
    # shards were concatenated in any order; a selection is looked up by (question, action)
    candidate = {(r["question_id"], r["action"]): r for r in candidates.to_pylist()}
    # one seeded order per step: the question selected for first gets first claim on a rare tool,
    # so the order must not follow question ids (they come in category blocks)
    selections = dict(
        select_in_order(
            list(by_question.items()),
            usage,
            cfg.rollout.selection,
            cfg.rollout.viable_threshold,
            order_seed=f"order:{cfg.rollout.seed}:{step}",
        )
    )
    selected, next_states = [], []
    for state in states.to_pylist():
        qid = state["question_id"]
        if qid in stopped and not state["done"]:
            next_states.append({**state, "done": True})  # closed without a selection or an answer
            continue
        if state["done"] or qid not in selections:
            next_states.append(state)  # finished at an earlier step: carried over unchanged
            continue
        selection = selections[qid]
        row = candidate[(qid, selection.action)]
        completion = render_step(row["thought"], selection.action, row["tool_input"])
        observation = observation_text(row, cfg.rollout.observation_chars)
        # an answer stated in the thought or the input ends this question's rollout early
        stated = final_answer(f"{row['thought']}\n{row['tool_input']}")
        entry = trajectory_entry(completion, observation)
        trajectory = f"{state['trajectory']}\n{entry}" if state["trajectory"] else entry
        selected.append(
            {
                "question_id": qid,
                "step": step,
                **asdict(selection),  # action, score, viable and the usage counts the rewards read
                "trajectory_before": state["trajectory"],
                "completion": completion,
                "observation": observation,
                "final_answer": stated,
                "behaviour_logprobs": None,  # filled after the barrier (training/behaviour.py)
            }
        )
        next_states.append(
            {
                "question_id": qid,
                "trajectory": trajectory,
                "steps_taken": step,
                "done": stated is not None or step >= cfg.rollout.steps,  # answered or out of steps
                "final_answer": stated,
            }
        )
    return (
        pa.Table.from_pylist(selected, schema=SELECTED_SCHEMA),
        pa.Table.from_pylist(next_states, schema=STATE_SCHEMA),
    )
