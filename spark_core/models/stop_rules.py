"""A stage's stop rules: what stops it early, on purpose and resumably — a cost limit
(``Budget``) and a judge that keeps failing (``FailureWatch``); ``StopRules`` holds a model's
rules in one stage.

Both act through the backends' gate (asked just before each request is sent), so a stage
stops without sending another request, while every call that finished is already in the
response cache: rerunning the same command resumes where the stage stopped.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from spark_core.models.prices import model_rates, prices_for
from spark_core.models.response_cache import ResponseCache

CHARS_PER_TOKEN = 3.0
"""Prompt-size estimate when no tokenizer is at hand: English runs ~4 characters per token
on GPT-4o's tokenizer; 3 errs on the side of spending less."""
TOKENS_PER_MESSAGE = 8  # chat-template overhead per message


class StageStopped(RuntimeError):
    """A stage that stopped on purpose; the message says why and what to do next."""

    def __reduce__(self):  # picklable as itself (Dask workers)
        return (type(self), (str(self),))


class JudgeFailing(StageStopped):
    """Too many of the first judgements failed."""


class CostLimitReached(StageStopped):
    """The next request could take a model's spend in this stage past its limit."""


def estimate_prompt_tokens(texts: Iterable[str]) -> int:
    texts = list(texts)
    return int(sum(len(t) for t in texts) / CHARS_PER_TOKEN) + TOKENS_PER_MESSAGE * len(texts)


@dataclass
class Budget:
    """A model's spending limit in one stage. Spend is recorded per finished call in the
    response cache's database, so the limit holds across reruns of the stage (raise it to go
    on); requests in flight hold a reservation for their worst case."""

    role: str
    model: str
    limit_usd: float
    prices: tuple[float, float]
    scope: str
    ledger: ResponseCache | None = None
    refused: int = 0
    rates: Any = None  # a judge's JudgeRates: cached prompt tokens and batch jobs cost less
    _reserved: float = 0.0
    _spent_here: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def for_model(cls, model: Any, role: str, scope: str, ledger: Any) -> Budget | None:
        """A paid model's spending limit in one stage (``model`` is its ModelConfig, ``role``
        names its config field), or None where it has no limit or costs nothing."""
        if model.max_cost_usd is None or model.backend != "openai":
            return None
        prices = prices_for(model.name, model.price_per_1k_prompt, model.price_per_1k_completion)
        if prices is None:
            raise ValueError(
                f"{role}.max_cost_usd needs a price for {model.name}: set "
                f"{role}.price_per_1k_prompt and {role}.price_per_1k_completion"
            )
        budget = cls(role, model.name, model.max_cost_usd, prices, scope, ledger)
        budget.rates = model_rates(model)
        return budget

    def cost(
        self,
        prompt_tokens: int,
        completion_tokens: int,
        cached_prompt: int = 0,
        batch: bool = False,
    ) -> float:
        if self.rates is not None:
            return self.rates.cost(prompt_tokens, completion_tokens, cached_prompt, batch)
        return (prompt_tokens * self.prices[0] + completion_tokens * self.prices[1]) / 1000

    def spent(self) -> float:
        return self.ledger.spent(self.scope) if self.ledger is not None else self._spent_here

    def reserve(self, usd: float) -> bool:
        """Hold ``usd`` for a request about to be sent; False when it might pass the limit."""
        with self._lock:
            if self.spent() + self._reserved + usd > self.limit_usd:
                self.refused += 1
                return False
            self._reserved += usd
            return True

    def settle(self, reserved: float, actual_usd: float) -> None:
        with self._lock:
            self._reserved -= reserved
            self._spent_here += actual_usd
            if self.ledger is not None and actual_usd:
                self.ledger.add_spend(self.scope, actual_usd)

    def error(self) -> CostLimitReached:
        return CostLimitReached(
            f"{self.role} {self.model}: cost limit reached — ${self.spent():.4f} spent in this "
            f"stage, and the next request could pass {self.role}.max_cost_usd "
            f"(${self.limit_usd:.2f}). {self.refused} request(s) were not sent. Everything "
            f"finished is in the response cache: raise {self.role}.max_cost_usd and rerun the "
            "same command to go on from here."
        )


class FailureWatch:
    """Counts judgements as they come (cached ones are successes) and trips as soon as more
    than ``max_rate`` of the first ``window`` judgements have certainly failed."""

    def __init__(self, window: int, max_rate: float, model: str, endpoint: str):
        self.window = window
        self.max_rate = max_rate
        self.model = model
        self.endpoint = endpoint
        self.seen = self.failed = 0  # within the window
        self.total = self.total_failed = 0
        self.samples: list[str] = []
        self.tripped = False
        self._lock = threading.Lock()

    def observe(self, ok: bool, reply: str, error: str) -> None:
        with self._lock:
            self.total += 1
            self.total_failed += not ok
            if self.seen >= self.window:
                return
            self.seen += 1
            if ok:
                return
            self.failed += 1
            sample = reply.strip() or error
            if len(self.samples) < 3 and sample not in self.samples:
                self.samples.append(sample)
            if self.failed > self.max_rate * self.window:
                self.tripped = True

    def error(self) -> JudgeFailing:
        replies = "\n".join(f"  {i}. {s[:160]!r}" for i, s in enumerate(self.samples, 1))
        return JudgeFailing(
            f"judge {self.model} at {self.endpoint} failed {self.failed} of its first "
            f"{self.seen} judgements ({self.failed / max(self.seen, 1):.0%}; "
            f"judge.max_failure_rate is {self.max_rate:.0%} of the first {self.window}), so "
            f"synthesis stopped early.\nSample replies:\n{replies}\nWhat to do: run `spark "
            "check judge -c CONFIG` to see what this endpoint supports (logprobs, structured "
            "output) and how often its replies parse; use a judge that can score (a stronger "
            "model, or a server with logprobs or JSON-schema output such as OpenAI or vLLM); "
            "or raise judge.max_failure_rate / judge.failure_window to go on regardless. "
            "Nothing judged so far is lost: rerun the same command to resume from the "
            "response cache."
        )


@dataclass
class StopRules:
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
