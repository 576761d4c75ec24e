"""Labeling: synthesis artifacts -> ``trajectories`` (one row per question x step) for training.

Each row holds the policy's state (system + user prompt), the selected action text (the
completion), every reward component, the return and advantage, and the question's final
answer and correctness. ``candidate_pool`` keeps all judged candidates of every step with their
scores, for training on every candidate with group-relative advantages.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import pyarrow as pa

from spark_core.config import RunConfig
from spark_core.labeling.rewards import (
    advantages,
    diversity_bonuses,
    outcome,
    running_share,
    step_rewards,
    trajectory_returns,
)
from spark_core.protocol import render_step, state_message, system_prompt, tool_lines

STAGE_VERSION = "5"  # 2: length-neutral returns, bonus at selection, no reward for guesses
# 3: candidate_pool carries the candidates' tool-call repairs
# 4: rewards.diversity (within-state contrast by default)
# 5: candidate_pool's `selected` column (was `chosen`); answer_source `final_prompt` (was
#    `answer_step`)
TRAJECTORIES_SCHEMA = pa.schema(
    [
        pa.field("question_id", pa.int64(), nullable=False),
        pa.field("category", pa.string(), nullable=False),
        pa.field("step", pa.int32(), nullable=False),
        pa.field("system", pa.string(), nullable=False),
        pa.field("prompt", pa.string(), nullable=False),
        pa.field("completion", pa.string(), nullable=False),
        pa.field("action", pa.string(), nullable=False),
        pa.field("judge_score", pa.float64(), nullable=False),
        pa.field("viable", pa.bool_(), nullable=False),
        pa.field("usage_share", pa.float64(), nullable=False),  # p_t, at selection time
        pa.field("r_quality", pa.float64(), nullable=False),
        pa.field("r_diversity", pa.float64(), nullable=False),
        pa.field("r_correct", pa.float64(), nullable=False),
        pa.field("reward", pa.float64(), nullable=False),
        pa.field("return", pa.float64(), nullable=False),
        pa.field("advantage", pa.float64(), nullable=False),
        pa.field("final_answer", pa.string(), nullable=False),
        pa.field("answer", pa.string(), nullable=False),
        pa.field("correct", pa.bool_(), nullable=False),
        pa.field("answer_source", pa.string(), nullable=False),  # AnswerSource
        pa.field("num_steps", pa.int32(), nullable=False),
        pa.field("behaviour_logprobs", pa.list_(pa.float32())),
    ]
)
CANDIDATE_POOL_SCHEMA = pa.schema(
    [
        pa.field("question_id", pa.int64(), nullable=False),
        pa.field("step", pa.int32(), nullable=False),
        pa.field("system", pa.string(), nullable=False),
        pa.field("prompt", pa.string(), nullable=False),
        pa.field("completion", pa.string(), nullable=False),
        pa.field("action", pa.string(), nullable=False),
        pa.field("judge_score", pa.float64(), nullable=False),
        pa.field("selected", pa.bool_(), nullable=False),  # the candidate synthesis selected
        pa.field("repair_attempts", pa.int32()),  # rollout.tool_retries; null: none run
        pa.field("repair_succeeded", pa.bool_()),
    ]
)


def label(
    cfg: RunConfig,
    questions: list[dict[str, Any]],
    selected: list[dict[str, Any]],
    finals: list[dict[str, Any]],
) -> pa.Table:
    """The ``trajectories`` table (rows ordered by question_id, step)."""
    system = system_prompt(tool_lines(cfg.rollout.actions))
    by_id = {q["question_id"]: q for q in questions}
    final_of = {f["question_id"]: f for f in finals}
    n_actions = len(cfg.rollout.actions)
    steps_of: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for row in selected:
        steps_of[row["question_id"]].append(row)
    rows: list[dict[str, Any]] = []
    for qid in sorted(steps_of):
        q, steps = by_id[qid], sorted(steps_of[qid], key=lambda r: r["step"])
        final = final_of[qid]
        correct = final["final_answer"] == q["answer"]
        shares = [running_share(s["usage_before"], s["total_before"], n_actions) for s in steps]
        parts = step_rewards(
            [s["score"] for s in steps],
            diversity_bonuses(steps, n_actions, cfg.rewards),
            outcome(final["final_answer"], final["answer_source"], q["answer"]),
            cfg.rewards,
        )
        returns = trajectory_returns(parts, cfg.rewards.gamma)
        for s, share, p, g in zip(steps, shares, parts, returns, strict=True):
            rows.append(
                {
                    "question_id": qid,
                    "category": q["category"],
                    "step": s["step"],
                    "system": system,
                    "prompt": state_message(q["question"], q["options"], s["trajectory_before"]),
                    "completion": s["completion"],
                    "action": s["action"],
                    "judge_score": s["score"],
                    "viable": s["viable"],
                    "usage_share": share,
                    **p,
                    "return": g,
                    "advantage": 0.0,
                    "final_answer": final["final_answer"],
                    "answer": q["answer"],
                    "correct": correct,
                    "answer_source": final["answer_source"],
                    "num_steps": len(steps),
                    "behaviour_logprobs": s.get("behaviour_logprobs"),
                }
            )
    adv = advantages([r["return"] for r in rows], [r["step"] for r in rows], cfg.rewards)
    for row, a in zip(rows, adv, strict=True):
        row["advantage"] = a
    return pa.Table.from_pylist(rows, schema=TRAJECTORIES_SCHEMA)


def candidate_pool(
    cfg: RunConfig,
    questions: list[dict[str, Any]],
    selected: list[dict[str, Any]],
    candidates: list[dict[str, Any]],
    scores: list[dict[str, Any]],
) -> pa.Table:
    """Every judged candidate as a (prompt, completion, score) row; ``selected`` marks the one
    synthesis selected at its step."""
    system = system_prompt(tool_lines(cfg.rollout.actions))
    by_id = {q["question_id"]: q for q in questions}
    before = {(s["question_id"], s["step"]): s for s in selected}
    score_of = {(s["question_id"], s["step"], s["action"]): s["score"] for s in scores}
    rows = []
    for c in sorted(candidates, key=lambda r: (r["question_id"], r["step"], r["action"])):
        key = (c["question_id"], c["step"])
        score = score_of.get((*key, c["action"]))
        if key not in before or score is None:
            continue
        q, selection = by_id[c["question_id"]], before[key]
        rows.append(
            {
                "question_id": c["question_id"],
                "step": c["step"],
                "system": system,
                "prompt": state_message(
                    q["question"], q["options"], selection["trajectory_before"]
                ),
                "completion": render_step(c["thought"], c["action"], c["tool_input"]),
                "action": c["action"],
                "judge_score": score,
                "selected": c["action"] == selection["action"],
                "repair_attempts": c.get("repair_attempts"),
                "repair_succeeded": c.get("repair_succeeded"),
            }
        )
    return pa.Table.from_pylist(rows, schema=CANDIDATE_POOL_SCHEMA)
