"""What a model's tokens cost: the known prices per model (a config's own prices override them)
and, for a judge, by how they were billed: fresh prompt tokens, prompt tokens the provider
served from its prompt cache, and tokens of a Batch API job.

Providers bill cached prompt tokens and batch jobs at a discount (OpenAI: cached input at
50% on GPT-4o, 25% on GPT-4.1; batch jobs at 50% of both prompt and completion). A model
without known prices gets no discount unless the config names one (``judge.price_per_1k_*``),
so an estimate errs on the side of paying more.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# USD per 1,000 tokens (prompt, completion) for known OpenAI models; a config's own
# price_per_1k_* fields override these.
KNOWN_PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o": (0.0025, 0.01),
    "gpt-4o-2024-08-06": (0.0025, 0.01),
    "gpt-4o-mini": (0.00015, 0.0006),
    "gpt-4.1": (0.002, 0.008),
    "gpt-4.1-mini": (0.0004, 0.0016),
    "gpt-4.1-nano": (0.0001, 0.0004),
}


def prices_for(model: str, prompt: float | None = None, completion: float | None = None):
    known = KNOWN_PRICES.get(model)
    if prompt is None and completion is None and known is None:
        return None
    return (
        prompt if prompt is not None else (known or (0.0, 0.0))[0],
        completion if completion is not None else (known or (0.0, 0.0))[1],
    )


# model -> (cached prompt price / prompt price, batch price / direct price)
KNOWN_DISCOUNTS: dict[str, tuple[float, float]] = {
    "gpt-4o": (0.5, 0.5),
    "gpt-4o-2024-08-06": (0.5, 0.5),
    "gpt-4o-mini": (0.5, 0.5),
    "gpt-4.1": (0.25, 0.5),
    "gpt-4.1-mini": (0.25, 0.5),
    "gpt-4.1-nano": (0.25, 0.5),
}


@dataclass(frozen=True)
class JudgeRates:
    """USD per 1,000 tokens of each kind."""

    prompt: float
    completion: float
    cached_prompt: float
    prompt_batch: float
    completion_batch: float

    def cost(
        self, prompt: int, completion: int, cached_prompt: int = 0, batch: bool = False
    ) -> float:
        """A call's cost: ``prompt`` counts every prompt token, ``cached_prompt`` of them the
        provider served from its cache (direct calls only: batch jobs are billed at batch
        prices)."""
        if batch:
            return (prompt * self.prompt_batch + completion * self.completion_batch) / 1000
        fresh = prompt - cached_prompt
        return (
            fresh * self.prompt + cached_prompt * self.cached_prompt + completion * self.completion
        ) / 1000


def rates_for(
    model: str,
    prompt: float | None = None,
    completion: float | None = None,
    cached_prompt: float | None = None,
    prompt_batch: float | None = None,
    completion_batch: float | None = None,
) -> JudgeRates | None:
    """A model's rates: the config's prices where given, else the known ones; None when the
    prompt and completion prices are unknown."""
    base = prices_for(model, prompt, completion)
    if base is None:
        return None
    cached_share, batch_share = KNOWN_DISCOUNTS.get(model, (1.0, 1.0))
    return JudgeRates(
        base[0],
        base[1],
        cached_prompt if cached_prompt is not None else base[0] * cached_share,
        prompt_batch if prompt_batch is not None else base[0] * batch_share,
        completion_batch if completion_batch is not None else base[1] * batch_share,
    )


def model_rates(model: Any) -> JudgeRates | None:
    """The rates of a ModelConfig (a judge's config names its cached and batch prices)."""
    return rates_for(
        model.name,
        model.price_per_1k_prompt,
        model.price_per_1k_completion,
        getattr(model, "price_per_1k_cached_prompt", None),
        getattr(model, "price_per_1k_prompt_batch", None),
        getattr(model, "price_per_1k_completion_batch", None),
    )


def cached_tokens(usage: Any) -> int:
    """The prompt tokens a response says the provider served from its prompt cache
    (``usage.prompt_tokens_details.cached_tokens``; 0 where the server does not say)."""
    details = getattr(usage, "prompt_tokens_details", None)
    if isinstance(details, dict):
        return int(details.get("cached_tokens") or 0)
    return int(getattr(details, "cached_tokens", 0) or 0)
