"""Generator and Judge: a backend behind the response cache, with token accounting and,
inside a stage, its guards (cost limit, judge failure watch).

Only finished calls are cached — a failed request or judgement is retried by the next run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from spark_core.config import JudgeConfig, ModelConfig
from spark_core.models.capabilities import Capabilities, capabilities_for, endpoint_of, forced
from spark_core.models.guards import (
    Budget,
    FailureWatch,
    StageStopped,
    estimate_prompt_tokens,
)
from spark_core.models.judge import HFJudge, Judgement, OpenAIJudge, stated_grade
from spark_core.models.judge_prices import model_rates
from spark_core.models.judge_prompt import JudgeItem, judge_messages
from spark_core.models.judge_state import group_states, state_messages, state_scorer
from spark_core.models.policy_step import STEP_CALLS, PolicyStep, StepRequest, policy_steps
from spark_core.models.requests import ChatRequest, Completion, Gate, OnDone
from spark_core.models.response_cache import ResponseCache, request_key
from spark_core.models.usage import Usage, prices_for

log = logging.getLogger(__name__)


def through_cache(
    cache: ResponseCache | None,
    usage: Usage,
    keys: list[str],
    items: list[Any],
    compute: Callable[[list[Any], OnDone, Gate], list[Any]],
    restore: Callable[[dict[str, Any]], Any],
    ok: Callable[[Any], bool],
    guards: Guards | None = None,
) -> list[Any]:
    """Serve what the cache holds; compute the rest, checkpointing each result the moment it
    exists — a crash loses only the calls in flight. Failed results are not cached. With
    ``guards``, each request is let through only while the budget allows it and the judge
    has not tripped its failure watch; a stop raises once every request in flight is
    checkpointed."""
    guards = guards or Guards()
    results: list[Any] = [None] * len(items)
    missing = []
    for i, key in enumerate(keys):
        stored = cache.get(key) if cache is not None else None
        if stored is None:
            missing.append(i)
            continue
        results[i] = restore(stored)
        usage.record(stored["prompt_tokens"], stored["completion_tokens"], cached=True)
        guards.observe(results[i], True)
    reserved: dict[int, float] = {}

    def gate(j: int) -> bool:
        allowed, reserved[j] = guards.admit(items[missing[j]])
        return allowed

    def checkpoint(j: int, result: Any) -> None:
        i = missing[j]
        results[i] = result
        guards.settle(reserved.pop(j, 0.0), result)
        guards.observe(result, ok(result))
        if not ok(result):
            usage.add_failure()
            return
        usage.record(
            result.prompt_tokens,
            result.completion_tokens,
            cached_prompt=getattr(result, "cached_prompt_tokens", 0),
            batch=getattr(result, "batch", False),
        )
        if cache is not None:
            cache.put(keys[i], result.to_dict())

    if missing:
        compute([items[i] for i in missing], checkpoint, gate if guards.active else None)
    if any(r is None for r in results):
        raise guards.stop_error()
    return results


@dataclass
class Guards:
    """A stage's stop rules for one model: its budget, and (judge) its failure watch.
    ``estimate(item)`` gives a request's worst-case (prompt, completion) tokens."""

    budget: Budget | None = None
    watch: FailureWatch | None = None
    estimate: Callable[[Any], tuple[int, int]] | None = None

    @property
    def active(self) -> bool:
        return self.budget is not None or self.watch is not None

    def admit(self, item: Any, batch: bool = False) -> tuple[bool, float]:
        """(let through, USD reserved for its worst case; at batch prices for a batch job)."""
        if self.watch is not None and self.watch.tripped:
            return False, 0.0
        if self.budget is None or self.estimate is None:
            return True, 0.0
        usd = self.budget.cost(*self.estimate(item), 0, batch)
        return self.budget.reserve(usd), usd

    def settle(self, reserved: float, result: Any) -> None:
        if self.budget is not None:
            prompt = getattr(result, "prompt_tokens", 0)
            cost = self.budget.cost(
                prompt,
                result.completion_tokens,
                getattr(result, "cached_prompt_tokens", 0),
                getattr(result, "batch", False),
            )
            self.budget.settle(reserved, cost)

    def observe(self, result: Any, ok: bool) -> None:
        if self.watch is not None:
            self.watch.observe(ok, getattr(result, "raw", ""), getattr(result, "error", ""))

    def stop_error(self) -> StageStopped:
        if self.watch is not None and self.watch.tripped:
            return self.watch.error()
        if self.budget is not None:
            return self.budget.error()
        return StageStopped("a request was skipped without a reason")


class Generator:
    def __init__(self, backend, cache: ResponseCache | None, usage: Usage, guards=None):
        self.backend = backend
        self.cache = cache
        self.usage = usage
        self.guards: Guards | None = guards

    def _key(self, request: ChatRequest) -> str:
        return request_key(self.backend.backend, self.backend.model_id, request.to_dict())

    def guarded(self, budget: Budget | None) -> Generator:
        """This generator (same backend, cache and usage) under a stage's cost limit."""

        def estimate(r: ChatRequest | StepRequest) -> tuple[int, int]:
            """Worst-case (prompt, completion) tokens of one request, for the reservation."""
            if isinstance(r, StepRequest):  # thought, action and input: one call each
                prompt = estimate_prompt_tokens([c for _, c in r.messages]) + r.thought_tokens
                return prompt * STEP_CALLS, r.thought_tokens + r.input_tokens + 8 * STEP_CALLS
            prompt = estimate_prompt_tokens([c for _, c in r.messages] + [r.prefill])
            return prompt, r.max_new_tokens

        return Generator(self.backend, self.cache, self.usage, Guards(budget, None, estimate))

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
            self.guards,
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
        from spark_core.models.step_session import StepSession

        step = StepSession(self.backend)
        done = self.generate(thoughts, lambda items, on_done, gate: step.thoughts(items, on_done))
        more = self.generate(
            inputs_for(done), lambda items, on_done, gate: step.inputs(items, on_done)
        )
        return done, more

    def policy_steps(self, requests: list[StepRequest]) -> list[PolicyStep]:
        """Policy steps whose action is chosen among the names (``policy_step``), cached."""
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
            self.guards,
        )


class Judge:
    def __init__(
        self,
        scorer: HFJudge | OpenAIJudge,
        backend_name: str,
        cache: ResponseCache | None,
        usage: Usage,
        guards: Guards | None = None,
        mode: str = "per_candidate",
        batch: Any = None,
    ):
        self.scorer = scorer
        self.backend_name = backend_name
        self.cache = cache
        self.usage = usage
        self.guards = guards
        self.mode = mode  # per_candidate | per_state (judge_state.py)
        self.batch = batch  # a BatchJudging (judge_batch.py): judge.batch on an openai judge

    @property
    def endpoint(self) -> str:
        if isinstance(self.scorer, OpenAIJudge):
            return endpoint_of(self.scorer.backend)
        return "local (transformers)"

    def _key(self, item: JudgeItem) -> str:
        request: dict[str, Any] = {"messages": [list(m) for m in judge_messages(item)]}
        if not isinstance(self.scorer, OpenAIJudge):
            request["v"] = 2  # 2: a local judgement carries its grade (cheap to recompute)
        return request_key(self.backend_name, self.scorer.model_id, request, kind="judge")

    def keys(self, items: list[JudgeItem]) -> list[str]:
        """Response-cache keys: per candidate, its own prompt; per state, the state's prompt
        and the candidate's number in it."""
        if self.mode != "per_state":
            return [self._key(i) for i in items]
        keys = [""] * len(items)
        for group in group_states(items):
            messages = [list(m) for m in state_messages([items[i] for i in group])]
            for k, i in enumerate(group, 1):
                request = {"mode": "per_state", "messages": messages, "candidate": k}
                keys[i] = request_key(self.backend_name, self.scorer.model_id, request, "judge")
        return keys

    def _state_scorer(self):
        return state_scorer(self.scorer)

    def guarded(self, budget: Budget | None, watch: FailureWatch | None) -> Judge:
        """This judge under a stage's cost limit and failure watch."""
        scorer = self.scorer

        def estimate(item: JudgeItem) -> tuple[int, int]:
            attempts = getattr(scorer, "attempts", 1)
            prompt = estimate_prompt_tokens(c for _, c in judge_messages(item))
            return prompt * attempts, max(getattr(scorer, "max_new_tokens", 1), 16) * attempts

        return Judge(
            self.scorer,
            self.backend_name,
            self.cache,
            self.usage,
            Guards(budget, watch, estimate),
            self.mode,
            self.batch,
        )

    def capabilities(self, refresh: bool = False) -> Capabilities | None:
        """The endpoint's scoring capabilities (probed once, cached); None for a local judge."""
        if not isinstance(self.scorer, OpenAIJudge):
            return None
        if refresh or self.scorer.capabilities is None:
            self.scorer.capabilities = capabilities_for(self.scorer.backend, self.cache, refresh)
        return self.scorer.capabilities

    def _compute(self, items: list[JudgeItem], on_done: OnDone, gate: Gate) -> list[Any]:
        if self.batch is not None:
            return self.batch.score(self, items, on_done, gate)
        return self.direct(items, on_done, gate)

    def direct(self, items: list[JudgeItem], on_done: OnDone, gate: Gate) -> list[Any]:
        """Judge ``items`` with direct calls, in this judge's mode."""
        if self.mode == "per_state":
            scorer = self._state_scorer()
            if isinstance(self.scorer, OpenAIJudge):
                return scorer.score(items, on_done, gate)
            return scorer.score(items, on_done)
        if isinstance(self.scorer, OpenAIJudge):
            return self.scorer.score(items, on_done, gate)
        return self.scorer.score(items, on_done)

    def score(self, items: list[JudgeItem]) -> list[Judgement]:
        if items:
            self.capabilities()
        results = through_cache(
            self.cache,
            self.usage,
            self.keys(items),
            items,
            self._compute,
            lambda d: Judgement(**{**d, "cached": True}),
            lambda j: j.status == "ok",
            self.guards,
        )
        for judgement in results:
            if judgement.grade is None and judgement.status == "ok":  # cached before grades
                judgement.grade = stated_grade(judgement.method, judgement.score, judgement.raw)
            if judgement.status != "ok":
                log.warning("judgement failed: %s", judgement.error)
        return results


def make_backend(cfg: ModelConfig):
    if cfg.backend == "openai":
        from spark_core.models.openai_backend import OpenAIBackend

        return OpenAIBackend(
            cfg.name, cfg.base_url, cfg.api_key_env, cfg.concurrency, cfg.timeout_s, cfg.max_retries
        )
    from spark_core.models.hf_backend import HFBackend

    return HFBackend(cfg.name, cfg.device, cfg.dtype, cfg.batch_size)


def _usage(cfg: ModelConfig) -> Usage:
    return Usage(
        cfg.name,
        prices_for(cfg.name, cfg.price_per_1k_prompt, cfg.price_per_1k_completion),
        rates=model_rates(cfg),
    )


def make_generator(cfg: ModelConfig, cache: ResponseCache | None) -> Generator:
    return Generator(make_backend(cfg), cache, _usage(cfg))


def make_judge(cfg: JudgeConfig, cache: ResponseCache | None) -> Judge:
    backend = make_backend(cfg)
    if cfg.backend == "openai":
        scorer: HFJudge | OpenAIJudge = OpenAIJudge(
            backend, cfg.max_new_tokens, cfg.attempts, forced(backend, cfg.scoring)
        )
    else:
        scorer = HFJudge(backend, cfg.local_batching)
    batch = None
    if cfg.batch and cfg.backend == "openai":
        from spark_core.models.judge_batch import BatchJudging

        batch = BatchJudging(cfg.batch_poll_max_s, cfg.batch_timeout_s)
    return Judge(scorer, cfg.backend, cache, _usage(cfg), None, cfg.mode, batch)
