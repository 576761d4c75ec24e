"""What the synthesis judge will cost under each way of buying it: per candidate or per state,
with the provider's prompt cache, as batch jobs — upper bounds, before anything is called.

Token counts follow ``run_plan`` (every question rolls every step; prompts from the real
templates at ~4 characters per token; completions at their limits). The provider's prompt
cache is modelled on OpenAI's rules: a prompt prefix of at least 1,024 tokens that an earlier
request sent is served from the cache in 128-token steps, so the 2nd..9th candidate of a state
(per_candidate; their prompts share everything before the candidate, ``models/judge/prompt.py``) pay
the cached price for that prefix. That assumes each state's first request reaches the provider
before the others (rollout sends a state's candidates concurrently, so a real run may see
fewer hits; the run's summary reports the cached tokens it got). Batch jobs are priced at
batch rates with no cache hits.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from spark_core.config import RunConfig
from spark_core.models.judge.prompt import SYSTEM, JudgeItem, user_message
from spark_core.models.judge.state_prompt import TOKENS_PER_SCORE, state_messages
from spark_core.models.prices import JudgeRates, model_rates
from spark_core.protocol import Question

CHARS_PER_TOKEN = 4.0  # as run_plan
MESSAGE_OVERHEAD = 8
CACHE_MIN_TOKENS = 1024  # OpenAI: shorter prefixes are never cached
CACHE_STEP_TOKENS = 128  # cache hits come in steps of this many tokens


@dataclass(frozen=True)
class JudgeOption:
    mode: str  # per_candidate | per_state
    caching: bool  # the provider's prompt cache serves repeated prefixes
    batch: bool  # Batch API jobs

    @property
    def name(self) -> str:
        parts = [self.mode] + ["provider cache"] * self.caching + ["batch"] * self.batch
        return " + ".join(parts)


@dataclass
class JudgeCost:
    option: JudgeOption
    calls: int = 0
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = None


OPTIONS = (
    JudgeOption("per_candidate", False, False),
    JudgeOption("per_candidate", True, False),
    JudgeOption("per_state", False, False),
    JudgeOption("per_candidate", False, True),
    JudgeOption("per_state", False, True),
)


def step_chars(cfg: RunConfig) -> int:
    """How much one finished step adds to a trajectory (thought, action, input, observation);
    the run plan (``run_plan.py``) and the time estimate size trajectories by it too."""
    r = cfg.rollout
    return int((r.thought_tokens + r.input_tokens) * CHARS_PER_TOKEN) + r.observation_chars + 60


def _tokens(chars: float, messages: int) -> int:
    return int(chars / CHARS_PER_TOKEN + MESSAGE_OVERHEAD * messages)


def cacheable(tokens: int) -> int:
    """The prompt tokens a provider's cache can serve of a repeated ``tokens``-long prefix."""
    return 0 if tokens < CACHE_MIN_TOKENS else tokens // CACHE_STEP_TOKENS * CACHE_STEP_TOKENS


def allowed(cfg: RunConfig) -> list[JudgeOption]:
    """The options this judge can use: caching and batch jobs need an OpenAI-compatible server
    (a local judge computes its shared prefix once anyway and costs nothing)."""
    if cfg.judge.backend != "openai":
        return [o for o in OPTIONS if not o.caching and not o.batch]
    return list(OPTIONS)


def judge_costs(cfg: RunConfig, train: list[Question]) -> list[JudgeCost]:
    """Every allowed option's calls, tokens and cost (upper bounds) for the synthesize stage."""
    r, jc = cfg.rollout, cfg.judge
    n = len(r.actions)
    candidate = int(r.input_tokens * CHARS_PER_TOKEN) + r.observation_chars
    costs = {o: JudgeCost(o) for o in allowed(cfg)}
    for q in train:
        for step in range(1, r.steps + 1):
            item = JudgeItem(
                q.question,
                q.options,
                "x" * ((step - 1) * step_chars(cfg)),
                "calculator",
                "",
                "",
                "x" * int(r.thought_tokens * CHARS_PER_TOKEN),
            )
            user = user_message(item)
            one = _tokens(len(SYSTEM) + len(user) + candidate, 2)
            shared = _tokens(len(SYSTEM) + user.index("\nAction:"), 1)
            state_chars = sum(len(c) for _, c in state_messages([item] * n)) + n * candidate
            whole_state = _tokens(state_chars, 2)
            for option, cost in costs.items():
                if option.mode == "per_candidate":
                    cost.calls += n
                    cost.prompt_tokens += n * one
                    cost.completion_tokens += n * jc.max_new_tokens
                    if option.caching:
                        cost.cached_prompt_tokens += (n - 1) * cacheable(shared)
                else:
                    cost.calls += 1
                    cost.prompt_tokens += whole_state
                    cost.completion_tokens += TOKENS_PER_SCORE * n + jc.max_new_tokens
    rates = model_rates(jc)
    for cost in costs.values():
        cost.cost_usd = _price(cost, rates, jc.backend)
    return list(costs.values())


def _price(cost: JudgeCost, rates: JudgeRates | None, backend: str) -> float | None:
    if rates is None:
        return 0.0 if backend == "hf" else None
    return rates.cost(
        cost.prompt_tokens, cost.completion_tokens, cost.cached_prompt_tokens, cost.option.batch
    )


def cheapest(costs: list[JudgeCost]) -> JudgeCost | None:
    priced = [c for c in costs if c.cost_usd is not None]
    return min(priced, key=lambda c: c.cost_usd) if priced else None  # type: ignore[arg-type]


def configured(cfg: RunConfig, train: list[Question]) -> JudgeCost:
    """The upper bound of the judge as configured (judge.mode, judge.batch; no cache hits)."""
    wanted = JudgeOption(cfg.judge.mode, False, cfg.judge.batch and cfg.judge.backend == "openai")
    found = next(c for c in judge_costs(cfg, train) if c.option == wanted)
    return replace(found)
