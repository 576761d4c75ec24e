"""``judge.mode: per_state``: one judge call per state, for all of its candidates — its prompt,
its reply's schema and how a reply is read (the judges themselves: ``per_state.py``).

The candidates of one state (a question's step) share the question, the options, the steps so
far and the step's thought — about 2,000 tokens on the paper's setting — and differ only in
their action, input and observation. ``per_candidate`` sends the shared part nine times;
``per_state`` sends it once, the candidates as a numbered list after it, and asks for one
integer 0-10 per candidate as a JSON object ``{"1": 7, "2": 3, ...}`` (JSON-schema structured
output or vLLM's guided JSON where the endpoint has it, else the reply's text is parsed). The
failure policy applies per candidate: a score missing from the reply fails that candidate
alone; the call is retried for the missing ones only.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from typing import Any

from spark_core.data.answers import LETTERS
from spark_core.models.judge.prompt import JudgeItem
from spark_core.models.requests import ChatRequest

STATE_SYSTEM = (
    "You grade candidate steps of a solution to a multiple-choice question. Each candidate "
    "used an action (a tool, or plain reasoning) and got an observation. Rate, for each "
    "candidate on its own, how much that step helps answer the question correctly: 0 = "
    "useless, wrong or misleading; 5 = somewhat relevant; 10 = correct and decisive. Reply "
    "with a JSON object mapping each candidate's number to an integer from 0 to 10, e.g. "
    '{"1": 7, "2": 0}, and nothing else.'
)
TOKENS_PER_SCORE = 6  # '"9": 10, ' in JSON


def group_states(items: list[JudgeItem]) -> list[list[int]]:
    """Indices of ``items`` grouped by state (their shared part), in first-seen order."""
    groups: dict[tuple, list[int]] = {}
    for i, item in enumerate(items):
        groups.setdefault(item.shared_part, []).append(i)
    return list(groups.values())


def candidate_block(number: int, item: JudgeItem) -> str:
    return (
        f"{number}. Action: {item.action}\n   Action Input: {item.tool_input.strip()}\n"
        f"   Observation: {item.tool_output.strip() or '(empty)'}"
    )


def state_user_message(items: list[JudgeItem]) -> str:
    """The shared context once, then the numbered candidates (all of one state)."""
    first = items[0]
    options = "\n".join(f"{LETTERS[i]}. {o}" for i, o in enumerate(first.options))
    trajectory = first.trajectory.strip() or "(no steps yet)"
    candidates = "\n".join(candidate_block(n, item) for n, item in enumerate(items, 1))
    keys = ", ".join(f'"{n}"' for n in range(1, len(items) + 1))
    return (
        f"Question:\n{first.question}\n\nOptions:\n{options}\n\n"
        f"Steps so far:\n{trajectory}\n\n"
        f"Thought of this step: {first.thought.strip() or '(none)'}\n\n"
        f"Candidate steps:\n{candidates}\n\n"
        f"Scores as JSON (keys {keys}; integers 0-10):"
    )


def state_messages(items: list[JudgeItem]) -> tuple[tuple[str, str], ...]:
    if len({item.shared_part for item in items}) != 1:
        raise ValueError("per_state judging needs candidates of one state")
    return (("system", STATE_SYSTEM), ("user", state_user_message(items)))


def state_request(items: list[JudgeItem], extra_tokens: int) -> ChatRequest:
    """One per-state judge call: room for every candidate's score and ``extra_tokens`` (the
    judge's ``max_new_tokens``) more."""
    return ChatRequest(
        state_messages(items), max_new_tokens=TOKENS_PER_SCORE * len(items) + extra_tokens
    )


def state_schema(n: int) -> dict[str, Any]:
    """The JSON schema of a reply: one integer 0-10 per candidate number."""
    keys = [str(k) for k in range(1, n + 1)]
    return {
        "type": "object",
        "properties": {k: {"type": "integer", "minimum": 0, "maximum": 10} for k in keys},
        "required": keys,
        "additionalProperties": False,
    }


def structured_extra(style: str, n: int) -> dict[str, Any]:
    """The chat() keyword arguments that ask for ``state_schema(n)`` in a structured-output
    style (``capabilities.STRUCTURED_STYLES``' keys)."""
    schema = state_schema(n)
    if style == "response_format":
        return {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "judge_scores", "strict": True, "schema": schema},
            }
        }
    if style == "vllm_structured_outputs":
        return {"extra_body": {"structured_outputs": {"json": schema}}}
    if style == "vllm_guided_json":
        return {"extra_body": {"guided_json": schema}}
    raise ValueError(f"unknown structured-output style {style!r}")


def _valid(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        if isinstance(value, str) and re.fullmatch(r"\s*\d+(\.\d+)?\s*", value):
            value = float(value)
        else:
            return None
    return float(value) if 0 <= value <= 10 else None


_LINE = re.compile(r"^\W*(?:candidate\s*)?(\d+)\s*[\.:)\-=]\s*\**\s*(\d+(?:\.\d+)?)", re.I | re.M)


def parse_state_reply(text: str, n: int) -> list[float | None]:
    """One score per candidate 1..n from a reply (None where it has none): the JSON object
    (possibly inside prose or a code fence), else lines like ``3: 7`` or ``Candidate 3 - 7``."""
    scores: list[float | None] = [None] * n
    start, end = text.find("{"), text.rfind("}")
    if start != -1 and end > start:
        try:
            data = json.loads(text[start : end + 1])
        except ValueError:
            data = None
        if isinstance(data, dict):
            for key, value in data.items():
                number = re.sub(r"\D", "", str(key))
                if number and 1 <= int(number) <= n and scores[int(number) - 1] is None:
                    scores[int(number) - 1] = _valid(value)
            if any(s is not None for s in scores):
                return scores
    for match in _LINE.finditer(text):
        number = int(match.group(1))
        if 1 <= number <= n and scores[number - 1] is None:
            scores[number - 1] = _valid(float(match.group(2)))
    return scores


def split_tokens(total: int, n: int) -> list[int]:
    """A call's tokens shared among its n candidates, summing exactly to ``total``."""
    share, rest = divmod(total, n)
    return [share + (i < rest) for i in range(n)]


def wider(request: ChatRequest, n: int) -> ChatRequest:
    return replace(request, max_new_tokens=max(request.max_new_tokens, TOKENS_PER_SCORE * n + 8))
