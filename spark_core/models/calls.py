"""Generator and Judge: a backend behind the response cache, with token accounting.

Only finished calls are cached — a failed request or judgement is retried by the next run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from spark_core.config import JudgeConfig, ModelConfig
from spark_core.models.judge import HFJudge, Judgement, OpenAIJudge
from spark_core.models.judge_prompt import JudgeItem, judge_messages
from spark_core.models.policy_step import PolicyStep, StepRequest, policy_steps
from spark_core.models.requests import ChatRequest, Completion, OnDone
from spark_core.models.response_cache import ResponseCache, request_key
from spark_core.models.usage import Usage, prices_for

log = logging.getLogger(__name__)


def through_cache(
    cache: ResponseCache | None,
    usage: Usage,
    keys: list[str],
    items: list[Any],
    compute: Callable[[list[Any], OnDone], list[Any]],
    restore: Callable[[dict[str, Any]], Any],
    ok: Callable[[Any], bool],
) -> list[Any]:
    """Serve what the cache holds; compute the rest, checkpointing each result the moment it
    exists — a crash loses only the calls in flight. Failed results are not cached."""
    results: list[Any] = [None] * len(items)
    missing = []
    for i, key in enumerate(keys):
        stored = cache.get(key) if cache is not None else None
        if stored is None:
            missing.append(i)
            continue
        results[i] = restore(stored)
        usage.record(stored["prompt_tokens"], stored["completion_tokens"], cached=True)

    def checkpoint(j: int, result: Any) -> None:
        i = missing[j]
        results[i] = result
        if not ok(result):
            usage.add_failure()
            return
        usage.record(result.prompt_tokens, result.completion_tokens)
        if cache is not None:
            cache.put(keys[i], result.to_dict())

    if missing:
        compute([items[i] for i in missing], checkpoint)
    return results


class Generator:
    def __init__(self, backend, cache: ResponseCache | None, usage: Usage):
        self.backend = backend
        self.cache = cache
        self.usage = usage

    def _key(self, request: ChatRequest) -> str:
        return request_key(self.backend.backend, self.backend.model_id, request.to_dict())

    def generate(self, requests: list[ChatRequest]) -> list[Completion]:
        return through_cache(
            self.cache,
            self.usage,
            [self._key(r) for r in requests],
            requests,
            self.backend.generate,
            lambda d: Completion(**{**d, "cached": True}),
            lambda c: c.finish_reason != "error",
        )

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
            lambda items, on_done: policy_steps(self.backend, items, on_done),
            lambda d: PolicyStep(**{**d, "cached": True}),
            lambda s: s.finish_reason != "error",
        )


class Judge:
    def __init__(
        self,
        scorer: HFJudge | OpenAIJudge,
        backend_name: str,
        cache: ResponseCache | None,
        usage: Usage,
    ):
        self.scorer = scorer
        self.backend_name = backend_name
        self.cache = cache
        self.usage = usage

    def _key(self, item: JudgeItem) -> str:
        request = {"messages": [list(m) for m in judge_messages(item)]}
        return request_key(self.backend_name, self.scorer.model_id, request, kind="judge")

    def score(self, items: list[JudgeItem]) -> list[Judgement]:
        results = through_cache(
            self.cache,
            self.usage,
            [self._key(i) for i in items],
            items,
            self.scorer.score,
            lambda d: Judgement(**{**d, "cached": True}),
            lambda j: j.status == "ok",
        )
        for judgement in results:
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
        cfg.name, prices_for(cfg.name, cfg.price_per_1k_prompt, cfg.price_per_1k_completion)
    )


def make_generator(cfg: ModelConfig, cache: ResponseCache | None) -> Generator:
    return Generator(make_backend(cfg), cache, _usage(cfg))


def make_judge(cfg: JudgeConfig, cache: ResponseCache | None) -> Judge:
    backend = make_backend(cfg)
    if cfg.backend == "openai":
        scorer: HFJudge | OpenAIJudge = OpenAIJudge(backend, cfg.max_new_tokens, cfg.attempts)
    else:
        scorer = HFJudge(backend, cfg.mode)
    return Judge(scorer, cfg.backend, cache, _usage(cfg))
