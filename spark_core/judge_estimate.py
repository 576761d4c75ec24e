"""The synthesis judge's expected cost, from a pilot: what an earlier synthesis of the same run
(``runtime.run_name``, same rollout section) measured, applied to the upper bounds of
``judge_costs.py``.

The upper bounds assume every question rolls every step, completions at their token limits
and prompts at ~4 characters per token. A pilot (e.g. ``--set data.total=28`` under the same
run name) measures the three things those bounds guess: the steps a question actually takes
before it states its answer, the judge's completion tokens per call, and its prompt tokens per
call against the plan's. The estimate scales each option's calls and prompt tokens by the
measured share of steps and the prompt ratio, and takes the measured completion length for the
mode the pilot ran (the other mode keeps its bound).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from spark_core.artifacts import ArtifactError, ArtifactStore
from spark_core.config import RunConfig
from spark_core.judge_costs import JudgeCost, _price, judge_costs
from spark_core.models.prices import model_rates
from spark_core.protocol import Question

SUMMARY = "summary_run"  # synthesize/<key>/summary_run: the stage's totals (one row)
MATCHED = ("actions", "steps", "thought_tokens", "input_tokens", "observation_chars")


@dataclass(frozen=True)
class Pilot:
    """What an earlier synthesis of this run measured."""

    where: str  # the summary artifact it was read from
    questions: int
    step_share: float  # steps taken / (questions x rollout.steps): 1.0 = every step rolled
    judge_calls: int
    prompt_tokens_per_call: float
    completion_tokens_per_call: float
    mode: str  # the judge.mode it ran (per_candidate unless it recorded otherwise)


def find_pilot(cfg: RunConfig) -> Pilot | None:
    """The largest earlier synthesis under this run's artifact root whose rollout matches this
    config (actions, steps, token budgets); None when there is none."""
    store = ArtifactStore(cfg.runtime.artifacts_url())
    rollout = cfg.section("rollout")
    found: list[Pilot] = []
    for path in store.fs.glob(store.fs_path(f"synthesize/*/{SUMMARY}.parquet")):
        name = path[len(store.fs_path("")) + 1 : -len(".parquet")]
        try:
            meta = store.metadata(name)
            row = store.read(name).to_pylist()[0]
        except (ArtifactError, OSError, IndexError, ValueError):
            continue  # a half-written or foreign file is no pilot
        config = meta.get("config", {})
        if any(config.get(k) != rollout.get(k) for k in MATCHED):
            continue
        if config.get("judge", cfg.judge.name) != cfg.judge.name:  # older pilots: unnamed
            continue
        if not row.get("questions") or not row.get("judge_calls"):
            continue
        found.append(
            Pilot(
                where=store.uri(name),
                questions=row["questions"],
                step_share=row["steps"] / (row["questions"] * cfg.rollout.steps),
                judge_calls=row["judge_calls"],
                prompt_tokens_per_call=row["judge_prompt_tokens"] / row["judge_calls"],
                completion_tokens_per_call=row["judge_completion_tokens"] / row["judge_calls"],
                mode=config.get("judge_mode", "per_candidate"),
            )
        )
    return max(found, key=lambda p: p.questions, default=None)


def estimated_costs(
    cfg: RunConfig, train: list[Question], pilot: Pilot, pilot_questions: list[Question]
) -> list[JudgeCost]:
    """Every option's expected calls, tokens and cost: its upper bound scaled by the pilot's
    share of steps taken and its measured/planned prompt tokens per call, with the pilot's
    completion length for the mode it ran. ``pilot_questions``: a sample of this run's
    questions the plan's prompt size is computed on (the prompt ratio's denominator)."""
    bounds = judge_costs(cfg, train)
    planned = next(c for c in judge_costs(cfg, pilot_questions) if _same_mode(c, pilot))
    ratio = pilot.prompt_tokens_per_call / (planned.prompt_tokens / planned.calls)
    rates = model_rates(cfg.judge)
    out = []
    for bound in bounds:
        calls = round(bound.calls * pilot.step_share)
        cost = replace(
            bound,
            calls=calls,
            prompt_tokens=round(bound.prompt_tokens * pilot.step_share * ratio),
            cached_prompt_tokens=round(bound.cached_prompt_tokens * pilot.step_share * ratio),
        )
        if _same_mode(bound, pilot):
            cost.completion_tokens = round(calls * pilot.completion_tokens_per_call)
        else:
            cost.completion_tokens = round(bound.completion_tokens * pilot.step_share)
        cost.cost_usd = _price(cost, rates, cfg.judge.backend)
        out.append(cost)
    return out


def _same_mode(cost: JudgeCost, pilot: Pilot) -> bool:
    return cost.option.mode == pilot.mode and not cost.option.caching and not cost.option.batch
