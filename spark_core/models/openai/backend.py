"""OpenAI-compatible backend: OpenAI itself, vLLM, TGI, ``transformers serve``.

Concurrent requests up to a limit, a per-request timeout, and retries with exponential backoff
and full jitter on 429, 5xx, timeouts and dropped connections. The API key is read from the
environment variable the config names — never from a file, never logged.
"""

from __future__ import annotations

import logging
import os
import random
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from spark_core.config import ModelConfig, default_of
from spark_core.models.requests import ChatRequest, Completion, Gate, OnDone

log = logging.getLogger(__name__)
BACKOFF_BASE_S = 0.25
BACKOFF_CAP_S = 20.0


class BackendError(RuntimeError):
    """A request that failed for good (after retries, or with a non-retryable status)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status  # the HTTP status, when the server answered

    def __reduce__(self):  # picklable with its status (Dask workers)
        return (type(self), (str(self), self.status))


def api_key_from_env(env_var: str, base_url: str | None) -> str:
    key = os.environ.get(env_var)
    if key:
        return key
    if base_url is None:
        raise BackendError(
            f"the OpenAI backend needs an API key: set the environment variable {env_var}"
        )
    return "not-needed"  # local OpenAI-compatible servers usually accept any key


def backoff_seconds(attempt: int, rng: random.Random) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2^attempt)]."""
    return rng.uniform(0, min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**attempt))


class OpenAIBackend:
    backend = "openai"

    def __init__(
        self,
        name: str,
        base_url: str | None = None,
        api_key_env: str = default_of(ModelConfig, "api_key_env"),
        concurrency: int = default_of(ModelConfig, "concurrency"),
        timeout_s: float = default_of(ModelConfig, "timeout_s"),
        max_retries: int = default_of(ModelConfig, "max_retries"),
    ):
        import openai

        self.name = name
        self.model_id = name
        self.base_url = base_url
        self.concurrency = concurrency
        self.max_retries = max_retries
        self.retries = 0
        # the first policy-step mode this server accepts (constrained_actions/openai_steps.py)
        self.action_mode = 0
        self._client = openai.OpenAI(
            base_url=base_url,
            api_key=api_key_from_env(api_key_env, base_url),
            timeout=timeout_s,
            max_retries=0,  # retries are ours: counted, jittered, and logged without secrets
        )
        self._rng = random.Random()

    @property
    def client(self) -> Any:
        """The OpenAI client (the Batch API's files and batches; chat goes through chat())."""
        return self._client

    def _retryable(self, exc: Exception) -> bool:
        import openai

        if isinstance(
            exc, (openai.APITimeoutError, openai.APIConnectionError, openai.RateLimitError)
        ):
            return True
        return isinstance(exc, openai.APIStatusError) and exc.status_code >= 500

    def chat(self, request: ChatRequest, **extra: Any) -> Any:
        """One chat-completions call with retries; returns the raw response object."""
        messages = [{"role": r, "content": c} for r, c in request.messages]
        kwargs: dict[str, Any] = {
            "model": self.name,
            "messages": messages,
            "max_tokens": request.max_new_tokens,
            "temperature": request.temperature,
            "top_p": request.top_p,
            "seed": request.seed,
            **extra,
        }
        if request.stop:
            kwargs["stop"] = list(request.stop)
        for attempt in range(self.max_retries + 1):
            try:
                return self._client.chat.completions.create(**kwargs)
            except Exception as exc:
                if not self._retryable(exc) or attempt == self.max_retries:
                    raise BackendError(
                        f"{self.name}: {type(exc).__name__}: {_describe(exc)}",
                        getattr(exc, "status_code", None),
                    ) from None
                self.retries += 1
                delay = backoff_seconds(attempt, self._rng)
                log.warning(
                    "%s: %s, retry %d/%d in %.2fs",
                    self.name,
                    _describe(exc),
                    attempt + 1,
                    self.max_retries,
                    delay,
                )
                time.sleep(delay)
        raise AssertionError("unreachable")

    def _one(self, request: ChatRequest) -> Completion:
        try:
            response = self.chat(request, **({"logprobs": True} if request.logprobs else {}))
        except BackendError as exc:  # failure is data; it is not cached, so a rerun retries
            return Completion("", finish_reason="error", extra={"error": str(exc)})
        choice = response.choices[0]
        usage = response.usage
        content = getattr(getattr(choice, "logprobs", None), "content", None)
        return Completion(
            text=choice.message.content or "",
            prompt_tokens=getattr(usage, "prompt_tokens", 0) or 0,
            completion_tokens=getattr(usage, "completion_tokens", 0) or 0,
            finish_reason=choice.finish_reason or "stop",
            # the generated tokens and their log-probs, when asked for and returned
            extra={"logprobs": [[t.token, t.logprob] for t in content]} if content else {},
        )

    def generate(
        self, requests: list[ChatRequest], on_done: OnDone = None, gate: Gate = None
    ) -> list[Completion]:
        return self.map(self._one, requests, on_done, gate)

    def map(self, fn, items: list[Any], on_done: OnDone = None, gate: Gate = None) -> list[Any]:
        """Run ``fn`` over ``items`` with at most ``concurrency`` requests in flight; each
        result is handed to ``on_done`` the moment it returns. ``gate(index)`` is asked just
        before each request is sent; False skips the item (its result is None), which is how
        a cost limit or a failing judge stops a batch early without waiting for all of it."""

        def run(indexed: tuple[int, Any]) -> Any:
            if gate is not None and not gate(indexed[0]):
                return None
            result = fn(indexed[1])
            if on_done is not None:
                on_done(indexed[0], result)
            return result

        if len(items) <= 1:
            return [run(pair) for pair in enumerate(items)]
        with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="openai") as pool:
            return list(pool.map(run, enumerate(items)))


def _describe(exc: Exception) -> str:
    """An error's status and message — never request headers, so never the key."""
    status = getattr(exc, "status_code", None)
    message = str(getattr(exc, "message", "") or exc)[:200]
    return f"HTTP {status}: {message}" if status else message
