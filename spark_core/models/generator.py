"""The generator: a backend behind the response cache, with token accounting and, inside a
stage, its cost limit. It writes completions, a synthesis step's thoughts and inputs, and policy
steps whose action is chosen among the action names (``constrained_actions``).

Only finished calls are cached — a failed request is retried by the next run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from spark_core.config import ModelConfig
from spark_core.models.backends import make_backend
from spark_core.models.constrained_actions.hf_steps import hf_policy_steps
from spark_core.models.constrained_actions.openai_steps import STEP_CALLS, openai_policy_steps
from spark_core.models.requests import (
    ChatRequest,
    Completion,
    Gate,
    OnDone,
    PolicyStep,
    StepRequest,
)
from spark_core.models.response_cache import ResponseCache, request_key
from spark_core.models.stop_rules import Budget, StopRules, estimate_prompt_tokens
from spark_core.models.through_cache import through_cache
from spark_core.models.usage import Usage, usage_for


def policy_steps(
    backend: Any, requests: list[StepRequest], on_done: OnDone = None, gate: Gate = None
) -> list[PolicyStep]:
    """Constrained steps on either backend; ``gate`` (a cost limit) applies to paid calls,
    so a local batch ignores it."""
    if backend.backend == "hf":
        return hf_policy_steps(backend, requests, on_done)
    return openai_policy_steps(backend, requests, on_done, gate)


class Generator:
    def __init__(self, backend, cache: ResponseCache | None, usage: Usage, stop_rules=None):
        self.backend = backend
        self.cache = cache
        self.usage = usage
        self.stop_rules: StopRules | None = stop_rules

    def _key(self, request: ChatRequest) -> str:
        return request_key(self.backend.backend, self.backend.model_id, request.to_dict())

    def with_stop_rules(self, budget: Budget | None) -> Generator:
        """This generator (same backend, cache and usage) under a stage's cost limit."""

        def estimate(r: ChatRequest | StepRequest) -> tuple[int, int]:
            """Worst-case (prompt, completion) tokens of one request, for the reservation."""
            if isinstance(r, StepRequest):  # thought, action and input: one call each
                prompt = estimate_prompt_tokens([c for _, c in r.messages]) + r.thought_tokens
                return prompt * STEP_CALLS, r.thought_tokens + r.input_tokens + 8 * STEP_CALLS
            prompt = estimate_prompt_tokens([c for _, c in r.messages] + [r.prefill])
            return prompt, r.max_new_tokens

        return Generator(self.backend, self.cache, self.usage, StopRules(budget, None, estimate))

    def _compute(self, items: list[ChatRequest], on_done: OnDone, gate: Gate) -> list[Any]:
        if gate is None or self.backend.backend != "openai":  # a local batch has no gate
            return self.backend.generate(items, on_done)
        return self.backend.generate(items, on_done, gate)

    def generate(self, requests: list[ChatRequest], compute=None) -> list[Completion]:
        """Completions through the cache; ``compute`` (items, on_done, gate) replaces the
        backend's generate for what the cache does not hold."""
        return through_cache(
            self.cache,
            self.usage,
            [self._key(r) for r in requests],
            requests,
            compute or self._compute,
            lambda d: Completion(**{**d, "cached": True}),
            lambda c: c.finish_reason != "error",
            self.stop_rules,
        )

    def thoughts_and_inputs(
        self,
        thoughts: list[ChatRequest],
        inputs_for: Callable[[list[Completion]], list[ChatRequest]],
    ) -> tuple[list[Completion], list[Completion]]:
        """A synthesis step's thoughts, then the inputs ``inputs_for(thoughts)`` asks for —
        the same requests and cache entries as two ``generate`` calls; on the local backend
        the inputs continue the thoughts' KV sessions (``step_session.py``)."""
        if getattr(self.backend, "backend", None) != "hf":
            done = self.generate(thoughts)
            return done, self.generate(inputs_for(done))
        from spark_core.models.hf.step_session import StepSession

        step = StepSession(self.backend)
        done = self.generate(thoughts, lambda items, on_done, gate: step.thoughts(items, on_done))
        more = self.generate(
            inputs_for(done), lambda items, on_done, gate: step.inputs(items, on_done)
        )
        return done, more

    def policy_steps(self, requests: list[StepRequest]) -> list[PolicyStep]:
        """Policy steps whose action is chosen among the names (``constrained_actions``), cached."""
        return through_cache(
            self.cache,
            self.usage,
            [
                request_key(self.backend.backend, self.backend.model_id, r.to_dict(), "step")
                for r in requests
            ],
            requests,
            lambda items, on_done, gate: policy_steps(self.backend, items, on_done, gate),
            lambda d: PolicyStep(**{**d, "cached": True}),
            lambda s: s.finish_reason != "error",
            self.stop_rules,
        )


def make_generator(cfg: ModelConfig, cache: ResponseCache | None) -> Generator:
    return Generator(make_backend(cfg), cache, usage_for(cfg))
