"""Planned, resumable stops of the synthesize stage as Prefect sees them: the judge preflight,
the stage's models under its stop rules (cost limits, judge failure watch), and the first stop
among units' states (a stopped unit returns ``tasks.caching.stopped_state``: Failed, named
"Stopped", whose message is the whole story, no traceback)."""

from __future__ import annotations

import threading
from typing import Any

from prefect import get_run_logger, task
from prefect.states import Failed, State

from spark_core.artifacts import canonical_hash
from spark_core.config import RunConfig
from spark_core.models.generator import Generator
from spark_core.models.judge.judge import Judge
from spark_core.models.registry import REGISTRY
from spark_core.models.stop_rules import Budget, FailureWatch, StageStopped
from spark_core.preflight import judge_preflight
from tasks.caching import STOPPED, stopped_state

_STOP_RULES: dict[str, tuple[Budget | None, Budget | None, FailureWatch]] = {}
_LOCK = threading.Lock()


def first_stop(states: list[State]) -> State | None:
    """The first planned stop among units' final states, as a new state the flow returns as
    its own (a unit's state object itself would be reported as '1/1 states failed')."""
    stop = next((s for s in states if s.is_failed() and s.name == STOPPED), None)
    return None if stop is None else Failed(name=STOPPED, message=stop.message)


def _budget(cfg: RunConfig, role: str, scope: str) -> Budget | None:
    return Budget.for_model(getattr(cfg, role), role, scope, REGISTRY.response_cache(cfg))


def models_with_stop_rules(cfg: RunConfig, plan: Any) -> tuple[Generator, Judge]:
    """This process's models under the stage's stop rules, shared by its units within one flow
    run (a rerun starts a fresh failure window; spend is read from the cache's ledger)."""
    from prefect.runtime import flow_run

    generator, judge = REGISTRY.stage_models(cfg)
    key = canonical_hash(
        [plan.key, str(flow_run.id), cfg.judge.model_dump(mode="json"), cfg.generator.max_cost_usd]
    )
    with _LOCK:
        if key not in _STOP_RULES:
            watch = FailureWatch(
                cfg.judge.failure_window,
                cfg.judge.max_failure_rate,
                cfg.judge.name,
                judge.endpoint,
            )
            scope = f"synthesize/{plan.key[:16]}"
            _STOP_RULES[key] = (
                _budget(cfg, "generator", f"{scope}/generator"),
                _budget(cfg, "judge", f"{scope}/judge"),
                watch,
            )
        gen_budget, judge_budget, watch = _STOP_RULES[key]
    return generator.with_stop_rules(gen_budget), judge.with_stop_rules(judge_budget, watch)


@task(name="preflight-judge")
def preflight_judge(cfg: RunConfig) -> State | None:
    """`spark check judge` before spending anything: an openai judge whose replies cannot
    be scored stops the stage here. A passing check is remembered per endpoint and model."""
    if cfg.judge.backend != "openai" or not cfg.judge.preflight:
        return None
    report, cached = judge_preflight(cfg, REGISTRY.response_cache(cfg))
    logger = get_run_logger()
    for line in report.lines():
        logger.info("preflight%s: %s", " (cached)" if cached else "", line)
    if not report.usable:
        return stopped_state(StageStopped(report.error()))
    return None
