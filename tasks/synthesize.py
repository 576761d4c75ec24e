"""Synthesis tasks: plan -> (per step: rollout shards in parallel -> selection barrier) ->
final answers -> summary. Each unit is cached on content hashes; its outputs live under
``synthesize/<key16>/`` so a rerun or a resumed run skips every finished unit."""

from __future__ import annotations

import threading
from collections import Counter

import pyarrow as pa
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.states import State

from spark_core.artifacts import ArtifactRef, canonical_hash, stage_key
from spark_core.config import RunConfig
from spark_core.data.questions import QUESTIONS_SCHEMA, Split
from spark_core.models.registry import REGISTRY
from spark_core.models.usage import Usage
from spark_core.protocol import Question
from spark_core.synthesis.barrier import (
    SELECTED_SCHEMA,
    STATE_SCHEMA,
    STOPPED_SCHEMA,
    USAGE_SCHEMA,
    advance_trajectories,
    initial_states,
    judge_stops,
    usage_table,
)
from spark_core.synthesis.rollout import (
    CANDIDATES_SCHEMA,
    FINAL_SCHEMA,
    SCORES_SCHEMA,
    STAGE_VERSION,
    check_actions,
    final_answers,
    rollout_step,
)
from spark_core.synthesis.summary import (
    ACTIONS_SCHEMA,
    RUN_SCHEMA,
    markdown,
    shard_line,
    step_line,
    stop_lines,
    summarize_run,
    summary_lines,
)
from spark_core.training.behaviour import add_behaviour_logprobs
from tasks.caching import Unit, cached_unit, rows, store_for, ui_key, unit_task
from tasks.results import Selection, Shard, SynthesisPlan, SynthesisSummary
from tasks.stage_stops import models_with_stop_rules
from tasks.tools import sandbox_for

SECTIONS = ("rollout", "tools", "generator", "judge")
PHASE_SECONDS: Counter = Counter()  # this process's time in generation / tools / judging
_PHASE_LOCK = threading.Lock()


def record_phases(timings: dict[str, float]) -> None:
    # a function, not inline: a task body may not reference a lock (Dask pickles the task)
    with _PHASE_LOCK:
        PHASE_SECONDS.update(timings)


def _train_questions(cfg: RunConfig, questions: ArtifactRef) -> dict[int, Question]:
    table = rows(store_for(cfg), [questions], QUESTIONS_SCHEMA)
    return {r["question_id"]: Question.from_row(r) for r in table if r["split"] == Split.TRAIN}


def _state(cfg: RunConfig, state: ArtifactRef) -> pa.Table:
    return store_for(cfg).read(state.name, STATE_SCHEMA)


@task(name="plan-synthesis", task_run_name="plan-synthesis")
def plan_synthesis(cfg: RunConfig, questions: ArtifactRef) -> tuple[SynthesisPlan, ArtifactRef]:
    """Shard the train questions and write the empty starting state."""
    check_actions(cfg.rollout.actions)
    ids = sorted(_train_questions(cfg, questions))
    if not ids:
        raise ValueError(f"{questions.uri} has no train questions to synthesize")
    n = min(cfg.rollout.shards, len(ids))
    config, inputs = {s: cfg.section(s) for s in SECTIONS}, {"questions": questions.content_hash}
    key = stage_key("synthesize", STAGE_VERSION, config, inputs)
    plan = SynthesisPlan(key, questions, tuple(tuple(ids[s::n]) for s in range(n)))
    unit = Unit("synthesize", key, {f"{plan.prefix}/step_0/state": STATE_SCHEMA}, config, inputs)
    state = cached_unit(store_for(cfg), unit, lambda: [initial_states(ids)], lambda r: r[0])
    return plan, state


def _step_dir(plan: SynthesisPlan, step: int, state: ArtifactRef) -> str:
    """A step's outputs are a function of the state it starts from: address them by it."""
    return f"{plan.prefix}/step_{step}/{state.content_hash[:12]}"


def shard_unit(
    cfg: RunConfig, plan: SynthesisPlan, step: int, shard: int, state: ArtifactRef
) -> Unit:
    base = _step_dir(plan, step, state)
    return Unit(
        "synthesize",
        canonical_hash(["rollout-shard", plan.key, step, shard, state.content_hash]),
        {f"{base}/candidates_{shard}": CANDIDATES_SCHEMA, f"{base}/scores_{shard}": SCORES_SCHEMA},
        {s: cfg.section(s) for s in SECTIONS},
        {"state": state.content_hash},
        what=f"step {step} shard {shard}",
    )


@unit_task("rollout-shard", shard_unit, "rollout-step{step}-shard{shard}")
def rollout_shard(
    cfg: RunConfig, plan: SynthesisPlan, step: int, shard: int, state: ArtifactRef
) -> Shard:
    """Generate, execute and judge the candidates of one shard at one step."""

    def compute():
        states = {r["question_id"]: r for r in _state(cfg, state).to_pylist()}
        questions = _train_questions(cfg, plan.questions)
        active = [questions[q] for q in plan.shards[shard] if not states[q]["done"]]
        generator, judge = models_with_stop_rules(cfg, plan)
        trajectories = {q: s["trajectory"] for q, s in states.items()}
        timings: dict[str, float] = {}
        candidates, scores = rollout_step(
            cfg, step, active, trajectories, generator, judge, sandbox_for(cfg), timings
        )
        record_phases(timings)
        usage = [
            "generator " + Usage.from_columns(cfg.generator, candidates, "gen").line(),
            "judge " + Usage.from_columns(cfg.judge, scores, "judge").line(),
        ]
        line = shard_line(step, shard, len(active), candidates, scores, "; ".join(usage), timings)
        get_run_logger().info(line)
        return [candidates, scores]  # scores last: its presence marks the unit complete

    unit = shard_unit(cfg, plan, step, shard, state)
    return cached_unit(store_for(cfg), unit, compute, lambda r: Shard(*r))


def select_unit(
    cfg: RunConfig,
    plan: SynthesisPlan,
    step: int,
    shards: list[Shard],
    state: ArtifactRef,
    usage: ArtifactRef | None,
) -> Unit:
    base = _step_dir(plan, step, state)
    hashes = [r.content_hash for s in shards for r in (s.candidates, s.scores)]
    usage_hash = usage.content_hash if usage else None
    return Unit(
        "synthesize",
        canonical_hash(["select", plan.key, step, state.content_hash, hashes, usage_hash]),
        {
            f"{base}/selected": SELECTED_SCHEMA,
            f"{base}/usage": USAGE_SCHEMA,
            f"{base}/next_state": STATE_SCHEMA,
            f"{base}/stopped": STOPPED_SCHEMA,
        },
        cfg.section("rollout"),
        {
            "state": state.content_hash,
            "scores": canonical_hash([s.scores.content_hash for s in shards]),
        },
        what=f"step {step} selection",
    )


@unit_task("select-step", select_unit, "select-step{step}")
def select(
    cfg: RunConfig,
    plan: SynthesisPlan,
    step: int,
    shards: list[Shard],
    state: ArtifactRef,
    usage: ArtifactRef | None,
) -> Selection:
    """The barrier: rarity-first selection over every shard, with global usage counts."""
    store = store_for(cfg)

    def compute():
        candidates = pa.concat_tables(
            [store.read(s.candidates.name, CANDIDATES_SCHEMA) for s in shards]
        )
        scores = pa.concat_tables([store.read(s.scores.name, SCORES_SCHEMA) for s in shards])
        counts = Counter()
        if usage is not None:
            counts.update({r["action"]: r["count"] for r in rows(store, [usage], USAGE_SCHEMA)})
        selected, states = advance_trajectories(
            cfg, step, candidates, scores, _state(cfg, state), counts
        )
        generator, _ = REGISTRY.stage_models(cfg)
        questions = _train_questions(cfg, plan.questions)
        selected = add_behaviour_logprobs(cfg, selected, questions, generator.backend, candidates)
        stops = judge_stops(step, scores)
        logger = get_run_logger()
        for line in stop_lines(step, stops):
            logger.warning(line)
        logger.info(step_line(step, selected.num_rows, stops.num_rows, counts))
        return [selected, usage_table(counts), states, stops]

    unit = select_unit(cfg, plan, step, shards, state, usage)
    return cached_unit(store, unit, compute, lambda r: Selection(*r[:3]))


def active_count(cfg: RunConfig, state: ArtifactRef) -> int:
    return sum(not d for d in _state(cfg, state).column("done").to_pylist())


@task(name="final-answers", task_run_name="final-answers")
def finalize(cfg: RunConfig, plan: SynthesisPlan, state: ArtifactRef) -> ArtifactRef | State:
    """Every question's final answer (stated, asked for, or MMLU-Pro's seeded guess)."""

    def compute():
        generator, _ = models_with_stop_rules(cfg, plan)
        questions = _train_questions(cfg, plan.questions)
        return [final_answers(cfg, questions, _state(cfg, state), generator)]

    outputs = {f"{plan.prefix}/final_answers": FINAL_SCHEMA}
    unit = Unit(
        "synthesize", plan.key, outputs, cfg.section("rollout"), {"state": state.content_hash}
    )
    return cached_unit(store_for(cfg), unit, compute, lambda r: r[0])


@task(name="summarize-synthesis", task_run_name="summarize-synthesis")
def summarize_synthesis(
    cfg: RunConfig,
    plan: SynthesisPlan,
    selected: list[ArtifactRef],
    shards: list[Shard],
    finals: ArtifactRef | None = None,
) -> SynthesisSummary:
    """Summary Parquet + Prefect table and markdown artifacts for the UI, with the spread of
    every reward component (labelled under this run's rewards section) once finals exist."""
    store = store_for(cfg)
    labelled = finals is not None  # the final answers exist: the steps can be labelled
    summed = summarize_run(
        cfg,
        rows(store, selected, SELECTED_SCHEMA),
        rows(store, [sh.candidates for sh in shards], CANDIDATES_SCHEMA),
        rows(store, [sh.scores for sh in shards], SCORES_SCHEMA),
        rows(store, [plan.questions], QUESTIONS_SCHEMA) if labelled else None,
        rows(store, [finals], FINAL_SCHEMA) if labelled else None,
    )
    # the judge beside the rollout: what a dry run's pilot estimate matches on (judge_estimate)
    judge = {"judge": cfg.judge.name, "judge_mode": cfg.judge.mode}
    meta = {"stage": "synthesize", "config": cfg.section("rollout") | judge, "inputs": {}}
    summary = SynthesisSummary(
        store.write(f"{plan.prefix}/summary_actions", summed.per_action, ACTIONS_SCHEMA, **meta),
        store.write(f"{plan.prefix}/summary_run", summed.run, RUN_SCHEMA, **meta),
    )
    for line in summary_lines(cfg.judge.name, summed.run, summed.rewards):
        get_run_logger().info(line)
    key = ui_key("synthesis", cfg)
    create_markdown_artifact(
        markdown(summed.per_action, summed.run, summed.rewards),
        key=key,
        description="SPaRK synthesis summary",
    )
    create_table_artifact(
        summed.per_action.to_pylist(),
        key=f"{key}-actions",
        description="Per-action usage and judge scores",
    )
    return summary
