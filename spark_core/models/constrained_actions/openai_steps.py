"""Constrained policy steps on an OpenAI-compatible server.

A step takes three calls: the thought (free text), the action, the input (free text). The
action call uses the server's structured output where it exists, tried in this order and
remembered per backend once a server refuses one:

1. vLLM's guided choice (``extra_body={"guided_choice": names}``): the reply is a name;
2. a JSON-schema ``response_format`` whose ``action`` is an enum of the names (OpenAI, vLLM,
   llama.cpp, TGI);
3. free text, parsed with the protocol's tolerant parser; what does not parse is ``invalid``.

The distribution comes from the logprobs where the server returns them: the top alternatives
at the first token of the name, each token's probability shared among the names it begins
(exact when the names' first tokens differ, as they do for the default actions). Without
logprobs the step has no distribution (``{}``); it is never invented.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from spark_core.models.openai.backend import BackendError
from spark_core.models.requests import ChatRequest, Gate, OnDone, PolicyStep, StepRequest
from spark_core.protocol import INPUT_STOP, INVALID, THOUGHT_STOP, canonical_action, cut_at

STEP_CALLS = 3
"""Requests one constrained step sends to an OpenAI-compatible server: the thought, the action
(structured output or free text), the input — what a cost limit reserves for."""
MODES = ("guided_choice", "json_schema", "text")
ACTION_QUESTION = "Which action is next? Reply with its name only, one of: {names}."
INPUT_QUESTION = "Write the Action Input for {action} only."
_LABEL = re.compile(r"^\s*\**thought\**\s*:\s*", re.IGNORECASE)
_VALUE_START = re.compile(r'"action"\s*:\s*"?$')


def _structured(mode: str, names: list[str]) -> dict[str, Any]:
    if mode == "guided_choice":
        return {"extra_body": {"guided_choice": names}}
    if mode == "json_schema":
        schema = {
            "type": "object",
            "properties": {"action": {"type": "string", "enum": names}},
            "required": ["action"],
            "additionalProperties": False,
        }
        return {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "action", "schema": schema, "strict": True},
            }
        }
    return {}


def _first_token_distribution(top: dict[str, float], names: list[str]) -> dict[str, float]:
    """P(name) from the alternatives for the name's first token; {} when none matches."""
    mass = dict.fromkeys(names, 0.0)
    for token, logprob in top.items():
        piece = token.strip().strip('"')
        starts = [n for n in names if piece and n.startswith(piece)]
        for name in starts:
            mass[name] += math.exp(logprob) / len(starts)
    total = sum(mass.values())
    return {n: m / total for n, m in mass.items()} if total > 0 else {}


def _action_position(tokens: list[Any], mode: str) -> Any | None:
    """The logprob entry of the name's first token: position 0, or (JSON) the token after
    ``"action": "``."""
    if mode != "json_schema":
        return tokens[0] if tokens else None
    text = ""
    for entry in tokens:
        if _VALUE_START.search(text):
            return entry
        text += entry.token
    return None


def _read_action(reply: str, mode: str, names: list[str]) -> str:
    reply = reply.strip()
    if mode == "json_schema":
        try:
            reply = str(json.loads(reply).get("action", ""))
        except (json.JSONDecodeError, AttributeError):
            pass
    if reply in names:
        return reply
    action = canonical_action(reply, [n for n in names if n != "answer"])
    return action if action in names else INVALID


class _Steps:
    def __init__(self, backend: Any):
        self.backend = backend
        self.mode_index = getattr(backend, "action_mode", 0)

    def _action_call(self, request: ChatRequest, names: list[str]) -> tuple[Any, str]:
        """The action call in the first mode this server accepts."""
        while True:
            mode = MODES[self.mode_index]
            try:
                extra = _structured(mode, names)
                return self.backend.chat(request, logprobs=True, top_logprobs=20, **extra), mode
            except BackendError:
                if self.mode_index == len(MODES) - 1:
                    raise
                self.mode_index += 1  # this server refuses the mode: remember, try the next
                self.backend.action_mode = self.mode_index

    def one(self, r: StepRequest) -> PolicyStep:
        names = list(r.names)
        tokens = [0, 0]

        def count(response: Any) -> str:
            usage = response.usage
            tokens[0] += getattr(usage, "prompt_tokens", 0) or 0
            tokens[1] += getattr(usage, "completion_tokens", 0) or 0
            return response.choices[0].message.content or ""

        try:
            reply = count(self.backend.chat(_with_stop(r.chat(r.thought_tokens), THOUGHT_STOP)))
            thought = cut_at(_LABEL.sub("", reply, count=1), THOUGHT_STOP)[0].strip()
            said = (*r.messages, ("assistant", f"Thought: {thought}"))
            ask = ("user", ACTION_QUESTION.format(names=", ".join(names)))
            response, mode = self._action_call(
                ChatRequest((*said, ask), 8, r.temperature, r.top_p, r.seed), names
            )
            action = _read_action(count(response), mode, names)
            content = getattr(getattr(response.choices[0], "logprobs", None), "content", None)
            entry = _action_position(list(content or []), mode)
            top = {t.token: t.logprob for t in (getattr(entry, "top_logprobs", None) or [])}
            distribution = _first_token_distribution(top, names) if top else {}
            said = (*r.messages, ("assistant", f"Thought: {thought}\nAction: {action}"))
            ask = ("user", INPUT_QUESTION.format(action=action))
            request = ChatRequest((*said, ask), r.input_tokens, r.temperature, r.top_p, r.seed)
            text = count(self.backend.chat(_with_stop(request, INPUT_STOP)))
        except BackendError as exc:  # failure is data; not cached, so a rerun retries
            return PolicyStep("", INVALID, "", finish_reason="error", extra={"error": str(exc)})
        return PolicyStep(
            thought,
            action,
            cut_at(text, INPUT_STOP)[0].strip(),
            distribution,
            prompt_tokens=tokens[0],
            completion_tokens=tokens[1],
            extra={"action_mode": mode},
        )


def _with_stop(request: ChatRequest, stop: tuple[str, ...]) -> ChatRequest:
    return ChatRequest(
        request.messages,
        request.max_new_tokens,
        request.temperature,
        request.top_p,
        request.seed,
        stop,
    )


def openai_policy_steps(
    backend: Any, requests: list[StepRequest], on_done: OnDone = None, gate: Gate = None
) -> list[PolicyStep]:
    """Constrained steps on an OpenAI-compatible server, ``concurrency`` at a time; ``gate``
    (a cost limit) is asked before each step is sent."""
    return backend.map(_Steps(backend).one, requests, on_done, gate)
