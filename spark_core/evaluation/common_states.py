"""Common-state action distributions: every policy's exact P(action | state) on one shared
set of states, the step-1 state of every held-out question.

On-policy entropy scores each policy on its own thoughts and trajectories, so a policy that
answers sooner or thinks differently is measured on other states. Here the state is the same
for every policy: the policy prompt with the step opened at ``Action:`` (no thought, no
rollout), one forward pass per question and policy. It is the cleanest test of "the policy
prefers different tools". A sampled baseline ``base@T`` needs no pass of its own: its
distribution is base's, tempered by T — the distribution its first action is drawn from.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from spark_core.evaluation.common_schema import COMMON_STATES_SCHEMA
from spark_core.evaluation.policies import EvaluatedPolicy
from spark_core.models.constrained_actions.scoring import (
    ANCHOR,
    action_names,
    score_actions,
    tempered,
)
from spark_core.models.requests import ChatRequest
from spark_core.protocol import Question, policy_messages


def state_prefix(backend: Any, question: Question, actions: list[str]) -> str:
    """The step-1 state of a question as the local model reads it: the prompt, the step
    opened at ``Action:``."""
    messages = policy_messages(question, "", actions)
    return backend.prompt_text(ChatRequest(messages, 1, prefill=ANCHOR))


def score_common_states(
    backend: Any, target: EvaluatedPolicy, questions: Sequence[Question], actions: list[str]
) -> pa.Table:
    """One row per question: the policy's P(action | step-1 state) over the actions and
    ``answer`` (the backend's active adapter is the policy's)."""
    names = action_names(actions)
    prefixes = [state_prefix(backend, q, actions) for q in questions]
    dists = score_actions(backend, prefixes, names)
    rows = [
        {
            "policy": target.policy,
            "seed": target.seed,
            "question_id": q.question_id,
            "category": q.category,
            "action_names": names,
            "probs": list(d.probs),
        }
        for q, d in zip(questions, dists, strict=True)
    ]
    return pa.Table.from_pylist(rows, schema=COMMON_STATES_SCHEMA)


def with_sampled(base_rows: list[dict[str, Any]], sampled: list[EvaluatedPolicy]) -> list[dict]:
    """Each sampled baseline's rows: base's distributions tempered by its temperature."""
    return [
        row | {"policy": target.policy, "probs": tempered(row["probs"], target.temperature)}
        for target in sampled
        for row in base_rows
    ]


def stratified_subset(questions: list[Question], n: int | None, seed: int) -> list[Question]:
    """``n`` questions, the same number from each category (all of a category that has
    fewer), drawn with ``seed``; all of them when ``n`` is None. Question order is kept."""
    if n is None or n >= len(questions):
        return list(questions)
    by_category: dict[str, list[Question]] = {}
    for q in questions:
        by_category.setdefault(q.category, []).append(q)
    per_category = max(1, n // len(by_category))
    rng = random.Random(f"rollout-subset:{seed}")
    kept: set[int] = set()
    for category in sorted(by_category):
        pool = sorted(by_category[category], key=lambda q: q.question_id)
        kept |= {q.question_id for q in rng.sample(pool, min(per_category, len(pool)))}
    return [q for q in questions if q.question_id in kept]
