"""A tool-choice probe: does offline PPO move P(action | state) where the advantages point?

Real states (the bundled MMLU-Pro sample questions, rendered exactly as the policy sees them)
get one step each per action tried: the target action's step carries a positive advantage and
the others negative ones. After offline PPO (pi_old as configured, as in a run), the
exact action distribution (constrained action scoring) is compared on *held-out* states, before
and after. ``bench/learn.py`` runs it on SmolLM2-135M; the tests on the tiny random model.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

from spark_core.models.constrained_actions.scoring import action_names, score_actions
from spark_core.models.requests import ChatRequest
from spark_core.protocol import render_step, state_message, system_prompt, tool_lines
from spark_core.training.behaviour import completion_logprobs

THOUGHT = "I should choose the action that fits this question best."


@dataclass(frozen=True)
class State:
    question_id: int
    category: str
    system: str
    prompt: str


def states(questions: list[dict[str, Any]], actions: list[str]) -> list[State]:
    """Each question's first state (no steps yet), as synthesis and evaluation render it."""
    system = system_prompt(tool_lines(actions))
    return [
        State(
            q["question_id"], q["category"], system, state_message(q["question"], q["options"], "")
        )
        for q in questions
    ]


def split(all_states: list[State], train_per_category: int) -> tuple[list[State], list[State]]:
    """The first ``train_per_category`` states of each category train; the rest are held out."""
    seen: dict[str, int] = {}
    train, held_out = [], []
    for s in all_states:
        seen[s.category] = seen.get(s.category, 0) + 1
        (train if seen[s.category] <= train_per_category else held_out).append(s)
    return train, held_out


def rows(
    train: list[State], actions: list[str], target: str, negatives: int, seed: int = 0
) -> list[dict[str, Any]]:
    """Per state: the target action's step with advantage +1 and ``negatives`` other actions'
    steps (drawn with a seeded rng) with advantage -1 — the steps differ only in the action."""
    rng = random.Random(f"probe:{seed}")
    others = [a for a in actions if a != target]
    out = []
    for s in train:
        for action in [target, *rng.sample(others, negatives)]:
            out.append(
                {
                    "system": s.system,
                    "prompt": s.prompt,
                    "completion": render_step(THOUGHT, action, "see the question above"),
                    "advantage": 1.0 if action == target else -1.0,
                }
            )
    return out


def with_behaviour(backend: Any, data: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows with the behaviour log-probs synthesis would have stored (the base model)."""
    lps = completion_logprobs(backend, [(r["system"], r["prompt"], r["completion"]) for r in data])
    return [{**r, "behaviour_logprobs": lp} for r, lp in zip(data, lps, strict=True)]


def action_probs(
    backend: Any, held_out: list[State], actions: list[str], adapter: Any
) -> list[dict[str, float]]:
    """P(action | state) over the action names, for every state, after the probe's thought."""
    prefixes = [
        backend.prompt_text(
            ChatRequest(
                (("system", s.system), ("user", s.prompt)), prefill=f"Thought: {THOUGHT}\nAction:"
            )
        )
        for s in held_out
    ]
    dists = score_actions(backend, prefixes, action_names(actions), adapter=adapter)
    return [d.to_dict() for d in dists]


def kl(p: dict[str, float], q: dict[str, float]) -> float:
    """KL(p || q) between two action distributions over the same names."""
    return sum(pv * math.log(pv / q[k]) for k, pv in p.items() if pv > 0)
