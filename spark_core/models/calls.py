"""Generator and Judge: a backend behind the response cache, with token accounting.

Only finished calls are cached — a failed request or judgement is retried by the next run.
"""

from __future__ import annotations

import logging

from spark_core.config import JudgeConfig, ModelConfig
from spark_core.models.judge import HFJudge, Judgement, OpenAIJudge
from spark_core.models.judge_prompt import JudgeItem, judge_messages
from spark_core.models.requests import ChatRequest, Completion
from spark_core.models.response_cache import ResponseCache, request_key
from spark_core.models.usage import Usage, prices_for

log = logging.getLogger(__name__)


class Generator:
    def __init__(self, backend, cache: ResponseCache | None, usage: Usage):
        self.backend = backend
        self.cache = cache
        self.usage = usage

    def _key(self, request: ChatRequest) -> str:
        return request_key(self.backend.backend, self.backend.model_id, request.to_dict())

    def generate(self, requests: list[ChatRequest]) -> list[Completion]:
        results: list[Completion | None] = [None] * len(requests)
        keys = [self._key(r) for r in requests]
        missing = []
        for i, key in enumerate(keys):
            stored = self.cache.get(key) if self.cache is not None else None
            if stored is None:
                missing.append(i)
                continue
            results[i] = Completion(**{**stored, "cached": True})
            self.usage.record(stored["prompt_tokens"], stored["completion_tokens"], cached=True)
        if missing:
            fresh = self.backend.generate([requests[i] for i in missing])
            for i, completion in zip(missing, fresh, strict=True):
                results[i] = completion
                if completion.finish_reason == "error":
                    self.usage.add_failure()
                    continue
                self.usage.record(completion.prompt_tokens, completion.completion_tokens)
                if self.cache is not None:
                    self.cache.put(keys[i], completion.to_dict())
        return [r for r in results if r is not None]


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
        results: list[Judgement | None] = [None] * len(items)
        keys = [self._key(item) for item in items]
        missing = []
        for i, key in enumerate(keys):
            stored = self.cache.get(key) if self.cache is not None else None
            if stored is None:
                missing.append(i)
                continue
            results[i] = Judgement(**stored)
            self.usage.record(stored["prompt_tokens"], stored["completion_tokens"], cached=True)
        if missing:
            fresh = self.scorer.score([items[i] for i in missing])
            for i, judgement in zip(missing, fresh, strict=True):
                results[i] = judgement
                if judgement.status != "ok":
                    self.usage.add_failure()
                    log.warning("judgement failed: %s", judgement.error)
                    continue
                self.usage.record(judgement.prompt_tokens, judgement.completion_tokens)
                if self.cache is not None:
                    self.cache.put(keys[i], judgement.to_dict())
        return [r for r in results if r is not None]


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
