"""The judge a stage uses: a scorer (``OpenAIJudge`` or ``HFJudge``) behind the response
cache, with token accounting, its mode (per candidate or per state), an optional Batch API job
and, inside a stage, its stop rules (cost limit, failure watch).

Only finished judgements are cached — a failed one is retried by the next run.
"""

from __future__ import annotations

import logging
from typing import Any

from spark_core.config import JudgeConfig, default_of
from spark_core.models.backends import make_backend
from spark_core.models.judge.batch import BatchJudging
from spark_core.models.judge.per_state import state_scorer
from spark_core.models.judge.prompt import JudgeItem, judge_messages
from spark_core.models.judge.scorers import (
    HFJudge,
    Judgement,
    JudgeStatus,
    OpenAIJudge,
    stated_grade,
)
from spark_core.models.judge.state_prompt import group_states, state_messages
from spark_core.models.openai.capabilities import (
    Capabilities,
    capabilities_for,
    endpoint_of,
    forced,
)
from spark_core.models.requests import Gate, OnDone
from spark_core.models.response_cache import ResponseCache, request_key
from spark_core.models.stop_rules import Budget, FailureWatch, StopRules, estimate_prompt_tokens
from spark_core.models.through_cache import through_cache
from spark_core.models.usage import Usage, usage_for

log = logging.getLogger(__name__)


class Judge:
    def __init__(
        self,
        scorer: HFJudge | OpenAIJudge,
        backend_name: str,
        cache: ResponseCache | None,
        usage: Usage,
        stop_rules: StopRules | None = None,
        mode: str = default_of(JudgeConfig, "mode"),
        batch: Any = None,
    ):
        self.scorer = scorer
        self.backend_name = backend_name
        self.cache = cache
        self.usage = usage
        self.stop_rules = stop_rules
        self.mode = mode  # per_candidate | per_state (per_state.py)
        self.batch = batch  # a BatchJudging (batch.py): judge.batch on an openai judge

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

    def with_stop_rules(self, budget: Budget | None, watch: FailureWatch | None) -> Judge:
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
            StopRules(budget, watch, estimate),
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
            lambda j: j.status == JudgeStatus.OK,
            self.stop_rules,
        )
        for judgement in results:
            # a judgement cached before grades were stored: its grade is read now
            if judgement.grade is None and judgement.status == JudgeStatus.OK:
                judgement.grade = stated_grade(judgement.method, judgement.score, judgement.raw)
            if judgement.status != JudgeStatus.OK:
                log.warning("judgement failed: %s", judgement.error)
        return results


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
        batch = BatchJudging(cfg.batch_poll_max_s, cfg.batch_timeout_s)
    return Judge(scorer, cfg.backend, cache, usage_for(cfg), None, cfg.mode, batch)
