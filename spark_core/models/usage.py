"""Token accounting and cost estimates, summed per stage."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from spark_core.models.prices import JudgeRates, model_rates, prices_for


@dataclass
class Usage:
    """Calls and tokens of one backend; cached calls are counted but cost nothing."""

    model: str
    prices: tuple[float, float] | None = None
    calls: int = 0
    cached_calls: int = 0
    failed_calls: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    # judge: prompt tokens the provider served from its cache; tokens billed as batch jobs
    cached_prompt_tokens: int = 0
    batch_prompt_tokens: int = 0
    batch_completion_tokens: int = 0
    rates: JudgeRates | None = None  # cached and batch prices (a judge); None: no discounts
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @classmethod
    def from_columns(cls, model: Any, table: Any, prefix: str) -> Usage:
        """One model's calls read back from an artifact's token columns
        (``<prefix>_prompt_tokens``, ``_completion_tokens``, ``_cached``); ``model`` is its
        ModelConfig (name and prices)."""
        usage = cls(
            model.name,
            prices_for(model.name, model.price_per_1k_prompt, model.price_per_1k_completion),
            rates=model_rates(model),
        )
        columns = [f"{prefix}_prompt_tokens", f"{prefix}_completion_tokens", f"{prefix}_cached"]
        values = [table.column(c).to_pylist() for c in columns]
        for optional, default in (("cached_prompt_tokens", 0), ("batch", False)):
            name = f"{prefix}_{optional}"
            present = name in table.column_names
            values.append(table.column(name).to_pylist() if present else [default] * len(table))
        for prompt, completion, cached, cached_prompt, batch in zip(*values, strict=True):
            usage.record(
                prompt, completion, cached=cached, cached_prompt=cached_prompt, batch=batch
            )
        return usage

    def record(
        self,
        prompt_tokens: int,
        completion_tokens: int,
        cached: bool = False,
        cached_prompt: int = 0,
        batch: bool = False,
    ) -> None:
        """One call; ``cached`` means the response cache served it (free), ``cached_prompt``
        the prompt tokens the provider's prompt cache served, ``batch`` a Batch API job."""
        with self._lock:
            self.calls += 1
            if cached:
                self.cached_calls += 1
                return
            self.prompt_tokens += prompt_tokens
            self.completion_tokens += completion_tokens
            if batch:
                self.batch_prompt_tokens += prompt_tokens
                self.batch_completion_tokens += completion_tokens
            else:
                self.cached_prompt_tokens += cached_prompt

    def add_retry(self) -> None:
        with self._lock:
            self.retries += 1

    def add_failure(self) -> None:
        with self._lock:
            self.failed_calls += 1

    @property
    def cost_usd(self) -> float | None:
        if self.prices is None:
            return None
        if self.rates is not None:
            batch = self.rates.cost(self.batch_prompt_tokens, self.batch_completion_tokens, 0, True)
            direct = self.rates.cost(
                self.prompt_tokens - self.batch_prompt_tokens,
                self.completion_tokens - self.batch_completion_tokens,
                self.cached_prompt_tokens,
            )
            return batch + direct
        return (
            self.prompt_tokens * self.prices[0] + self.completion_tokens * self.prices[1]
        ) / 1000

    def line(self) -> str:
        """'18 calls (4 cached), 6,120+36 tokens, $0.0157' — for log lines (with the prompt
        tokens the provider's cache served and the batch-job tokens, where there are any)."""
        cost = "" if self.cost_usd is None else f", ${self.cost_usd:.4f}"
        extra = ""
        if self.cached_prompt_tokens:
            extra += f", {self.cached_prompt_tokens:,} prompt tokens from the provider's cache"
        if self.batch_prompt_tokens or self.batch_completion_tokens:
            extra += (
                f", {self.batch_prompt_tokens:,}+{self.batch_completion_tokens:,} in batch jobs"
            )
        return (
            f"{self.calls} calls ({self.cached_calls} cached), "
            f"{self.prompt_tokens:,}+{self.completion_tokens:,} tokens{extra}{cost}"
        )

    def summary(self) -> dict[str, object]:
        return {
            "model": self.model,
            "calls": self.calls,
            "cached_calls": self.cached_calls,
            "failed_calls": self.failed_calls,
            "retries": self.retries,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cached_prompt_tokens": self.cached_prompt_tokens,
            "batch_prompt_tokens": self.batch_prompt_tokens,
            "batch_completion_tokens": self.batch_completion_tokens,
            "cost_usd": None if self.cost_usd is None else round(self.cost_usd, 6),
        }


def usage_for(cfg: Any) -> Usage:
    """A fresh account for a model config: its name, prices and (a judge's) billing rates."""
    return Usage(
        cfg.name,
        prices_for(cfg.name, cfg.price_per_1k_prompt, cfg.price_per_1k_completion),
        rates=model_rates(cfg),
    )
