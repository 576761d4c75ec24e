"""Synthesis tasks: plan -> (per step: rollout shards in parallel -> selection barrier) ->
final answers -> summary. Each unit is cached on content hashes; its outputs live under
``synthesize/<key16>/`` so a rerun or a resumed run skips every finished unit."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass

import pyarrow as pa
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.states import State

from spark_core.artifacts import ArtifactRef, canonical_hash, stage_key
from spark_core.barrier import (
    SELECTED_SCHEMA,
    STATE_SCHEMA,
    STOPPED_SCHEMA,
    USAGE_SCHEMA,
    advance_trajectories,
    initial_states,
    judge_stops,
    usage_table,
)
from spark_core.config import ModelConfig, RunConfig
from spark_core.labeling import label
from spark_core.models.guards import StageStopped
from spark_core.models.usage import Usage, prices_for
from spark_core.questions import QUESTIONS_SCHEMA
from spark_core.rl.behaviour import add_behaviour_logprobs
from spark_core.rollout import (
    CANDIDATES_SCHEMA,
    CODE_VERSION,
    FINAL_SCHEMA,
    SCORES_SCHEMA,
    Question,
    check_actions,
    final_answers,
    rollout_step,
)
from spark_core.synthesis_summary import (
    ACTIONS_SCHEMA,
    RUN_SCHEMA,
    markdown,
    reward_spread,
    summarize,
)
from tasks.caching import cache_key_from, existing, store_for
from tasks.models import models_for
from tasks.stage_guards import guarded_models, stopped_state
from tasks.tools import sandbox_for

SECTIONS = ("rollout", "tools", "generator", "judge")
PHASE_SECONDS: Counter = Counter()  # this process's time in generation / tools / judging
_PHASE_LOCK = threading.Lock()


def record_phases(timings: dict[str, float]) -> None:
    # a function, not inline: a task body may not reference a lock (Dask pickles the task)
    with _PHASE_LOCK:
        PHASE_SECONDS.update(timings)


@dataclass(frozen=True)
class SynthesisPlan:
    key: str
    questions: ArtifactRef
    shards: tuple[tuple[int, ...], ...]

    @property
    def prefix(self) -> str:
        return f"synthesize/{self.key[:16]}"


def synthesis_key(cfg: RunConfig, questions: ArtifactRef) -> str:
    return stage_key(
        "synthesize",
        CODE_VERSION,
        {s: cfg.section(s) for s in SECTIONS},
        {"questions": questions.content_hash},
    )


def _train_questions(cfg: RunConfig, questions: ArtifactRef) -> dict[int, Question]:
    table = store_for(cfg).read(questions.name, QUESTIONS_SCHEMA)
    return {
        r["question_id"]: Question.from_row(r) for r in table.to_pylist() if r["split"] == "train"
    }


@task(name="plan-synthesis")
def plan_synthesis(cfg: RunConfig, questions: ArtifactRef) -> tuple[SynthesisPlan, ArtifactRef]:
    """Shard the train questions and write the empty starting state."""
    check_actions(cfg.rollout.actions)
    ids = sorted(_train_questions(cfg, questions))
    if not ids:
        raise ValueError(f"{questions.uri} has no train questions to synthesize")
    n = min(cfg.rollout.shards, len(ids))
    plan = SynthesisPlan(
        synthesis_key(cfg, questions), questions, tuple(tuple(ids[s::n]) for s in range(n))
    )
    store = store_for(cfg)
    name = f"{plan.prefix}/step_0/state"
    state = (
        store.ref(name)
        if store.exists(name)
        else store.write(
            name,
            initial_states(ids),
            STATE_SCHEMA,
            stage="synthesize",
            config={s: cfg.section(s) for s in SECTIONS},
            inputs={"questions": questions.content_hash},
        )
    )
    return plan, state


def _step_dir(plan: SynthesisPlan, step: int, state: ArtifactRef) -> str:
    """A step's outputs are a function of the state it starts from: address them by it."""
    return f"{plan.prefix}/step_{step}/{state.content_hash[:12]}"


def _shard_outputs(
    key: str, cfg: RunConfig, plan: SynthesisPlan, step: int, shard: int, state: ArtifactRef
) -> list[str]:
    base = _step_dir(plan, step, state)
    return [f"{base}/candidates_{shard}", f"{base}/scores_{shard}"]


def _shard_key(
    cfg: RunConfig, plan: SynthesisPlan, step: int, shard: int, state: ArtifactRef
) -> str:
    return canonical_hash(["rollout-shard", plan.key, step, shard, state.content_hash])


@task(
    name="rollout-shard",
    cache_key_fn=cache_key_from(_shard_key, _shard_outputs),
    persist_result=True,
)
def rollout_shard(
    cfg: RunConfig, plan: SynthesisPlan, step: int, shard: int, state: ArtifactRef
) -> list[ArtifactRef]:
    """Generate, execute and judge the candidates of one shard at one step."""
    store = store_for(cfg)
    names = _shard_outputs("", cfg, plan, step, shard, state)
    done = existing(store, names)
    if done:
        return done
    states = {r["question_id"]: r for r in store.read(state.name, STATE_SCHEMA).to_pylist()}
    questions = _train_questions(cfg, plan.questions)
    active = [questions[q] for q in plan.shards[shard] if not states[q]["done"]]
    generator, judge = guarded_models(cfg, plan)
    timings: dict[str, float] = {}
    try:
        candidates, scores = rollout_step(
            cfg,
            step,
            active,
            {q: s["trajectory"] for q, s in states.items()},
            generator,
            judge,
            sandbox_for(cfg),
            timings,
        )
    except StageStopped as exc:  # everything finished is in the response cache
        get_run_logger().error("step %d shard %d stopped: %s", step, shard, exc)
        return stopped_state(exc)
    record_phases(timings)
    meta = {
        "stage": "synthesize",
        "config": {s: cfg.section(s) for s in SECTIONS},
        "inputs": {"state": state.content_hash},
    }
    # scores last: its presence marks the unit complete
    refs = [
        store.write(names[0], candidates, CANDIDATES_SCHEMA, **meta),
        store.write(names[1], scores, SCORES_SCHEMA, **meta),
    ]
    failed = sum(s != "ok" for s in scores.column("judge_status").to_pylist())
    get_run_logger().info(
        "step %d shard %d: %d questions, %d candidates, tool errors %d, judge failures %d "
        "(%.0f%%); %s; %s — %s",
        step,
        shard,
        len(active),
        candidates.num_rows,
        sum(s != "ok" for s in candidates.column("status").to_pylist()),
        failed,
        100 * failed / max(scores.num_rows, 1),
        "generator " + _usage(cfg.generator, candidates, "gen").line(),
        "judge " + _usage(cfg.judge, scores, "judge").line(),
        ", ".join(f"{k} {v:.1f}s" for k, v in sorted(timings.items())),
    )
    return refs


def _usage(model: ModelConfig, table: pa.Table, prefix: str) -> Usage:
    """One backend's calls of a shard, read back from its artifact's token columns."""
    prices = prices_for(model.name, model.price_per_1k_prompt, model.price_per_1k_completion)
    usage = Usage(model.name, prices)
    columns = [f"{prefix}_prompt_tokens", f"{prefix}_completion_tokens", f"{prefix}_cached"]
    for prompt, completion, cached in zip(
        *(table.column(c).to_pylist() for c in columns), strict=True
    ):
        usage.record(prompt, completion, cached=cached)
    return usage


def _select_outputs(
    key: str, cfg: RunConfig, plan: SynthesisPlan, step: int, state: ArtifactRef, **_: object
) -> list[str]:
    base = _step_dir(plan, step, state)
    return [f"{base}/selected", f"{base}/usage", f"{base}/next_state", f"{base}/stopped"]


def _select_key(
    cfg: RunConfig,
    plan: SynthesisPlan,
    step: int,
    shards: list[list[ArtifactRef]],
    state: ArtifactRef,
    usage: ArtifactRef | None,
) -> str:
    return canonical_hash(
        [
            "select",
            plan.key,
            step,
            state.content_hash,
            [r.content_hash for refs in shards for r in refs],
            usage.content_hash if usage else None,
        ]
    )


@task(
    name="select-step",
    cache_key_fn=cache_key_from(_select_key, _select_outputs),
    persist_result=True,
)
def select(
    cfg: RunConfig,
    plan: SynthesisPlan,
    step: int,
    shards: list[list[ArtifactRef]],
    state: ArtifactRef,
    usage: ArtifactRef | None,
) -> list[ArtifactRef]:
    """The barrier: rarity-first selection over every shard, with global usage counts."""
    store = store_for(cfg)
    names = _select_outputs("", cfg, plan, step, state)
    done = existing(store, names)
    if done:
        return done[:3]
    candidates = pa.concat_tables([store.read(c.name, CANDIDATES_SCHEMA) for c, _ in shards])
    scores = pa.concat_tables([store.read(s.name, SCORES_SCHEMA) for _, s in shards])
    counts = Counter()
    if usage is not None:
        counts.update(
            {r["action"]: r["count"] for r in store.read(usage.name, USAGE_SCHEMA).to_pylist()}
        )
    selected, states = advance_trajectories(
        cfg, step, candidates, scores, store.read(state.name, STATE_SCHEMA), counts
    )
    generator, _ = models_for(cfg)
    selected = add_behaviour_logprobs(
        cfg, selected, _train_questions(cfg, plan.questions), generator.backend, candidates
    )
    meta = {
        "stage": "synthesize",
        "config": cfg.section("rollout"),
        "inputs": {
            "state": state.content_hash,
            "scores": canonical_hash([s.content_hash for _, s in shards]),
        },
    }
    refs = [
        store.write(names[0], selected, SELECTED_SCHEMA, **meta),
        store.write(names[1], usage_table(counts), USAGE_SCHEMA, **meta),
        store.write(names[2], states, STATE_SCHEMA, **meta),
    ]
    stops = judge_stops(step, scores)
    store.write(names[3], stops, STOPPED_SCHEMA, **meta)
    logger = get_run_logger()
    for row in stops.to_pylist():
        logger.warning(
            "question %d stopped at step %d: %s; the judge replied %s",
            row["question_id"],
            step,
            row["reason"],
            row["judge_replies"][:3],
        )
    logger.info(
        "step %d: selected %d actions, %d questions stopped (every judgement failed), "
        "usage so far %s",
        step,
        selected.num_rows,
        stops.num_rows,
        dict(sorted(counts.items())),
    )
    return refs


def active_count(cfg: RunConfig, state: ArtifactRef) -> int:
    table = store_for(cfg).read(state.name, STATE_SCHEMA)
    return sum(not d for d in table.column("done").to_pylist())


@task(name="final-answers")
def finalize(cfg: RunConfig, plan: SynthesisPlan, state: ArtifactRef) -> ArtifactRef | State:
    """Every question's final answer (stated, asked for, or MMLU-Pro's seeded guess)."""
    store = store_for(cfg)
    name = f"{plan.prefix}/final_answers"
    if store.exists(name):
        return store.ref(name)
    generator, _ = guarded_models(cfg, plan)
    try:
        table = final_answers(
            cfg,
            _train_questions(cfg, plan.questions),
            store.read(state.name, STATE_SCHEMA),
            generator,
        )
    except StageStopped as exc:
        return stopped_state(exc)
    return store.write(
        name,
        table,
        FINAL_SCHEMA,
        stage="synthesize",
        config=cfg.section("rollout"),
        inputs={"state": state.content_hash},
    )


@task(name="summarize-synthesis")
def summarize_synthesis(
    cfg: RunConfig,
    plan: SynthesisPlan,
    selected: list[ArtifactRef],
    shards: list[list[ArtifactRef]],
    finals: ArtifactRef | None = None,
) -> list[ArtifactRef]:
    """Summary Parquet + Prefect table and markdown artifacts for the UI, with the spread of
    every reward component (labelled under this run's rewards section) once finals exist."""
    store = store_for(cfg)
    sel = [r for ref in selected for r in store.read(ref.name, SELECTED_SCHEMA).to_pylist()]
    cands = [r for c, _ in shards for r in store.read(c.name, CANDIDATES_SCHEMA).to_pylist()]
    scores = [r for _, s in shards for r in store.read(s.name, SCORES_SCHEMA).to_pylist()]
    judge = cfg.judge
    per_action, run = summarize(
        cfg.rollout.actions,
        sel,
        cands,
        scores,
        cfg.rollout.viable_threshold,
        judge.name,
        (judge.price_per_1k_prompt, judge.price_per_1k_completion),
    )
    r = run.to_pylist()[0]
    get_run_logger().info(
        "judge %s: %d of %d judgements failed (%.1f%%); %d questions stopped because every "
        "judgement of a step failed",
        judge.name,
        r["failed_judgements"],
        r["judge_calls"],
        100 * r["judge_failure_rate"],
        r["stopped_questions"],
    )
    meta = {"stage": "synthesize", "config": cfg.section("rollout"), "inputs": {}}
    refs = [
        store.write(f"{plan.prefix}/summary_actions", per_action, ACTIONS_SCHEMA, **meta),
        store.write(f"{plan.prefix}/summary_run", run, RUN_SCHEMA, **meta),
    ]
    rewards = None
    if finals is not None and sel:
        questions = store.read(plan.questions.name, QUESTIONS_SCHEMA).to_pylist()
        final_rows = store.read(finals.name, FINAL_SCHEMA).to_pylist()
        rewards = reward_spread(label(cfg, questions, sel, final_rows))
        get_run_logger().info(
            "reward components: %s",
            "; ".join(
                f"{r['component']} {r['min']:.3f}..{r['max']:.3f} (std {r['std']:.3f}, "
                f"{r['distinct']} values)"
                for r in rewards.to_pylist()
            ),
        )
    key = f"synthesis-{cfg.runtime.run_name}".lower().replace("_", "-").replace(".", "-")
    create_markdown_artifact(
        markdown(per_action, run, rewards), key=key, description="SPaRK synthesis summary"
    )
    create_table_artifact(
        per_action.to_pylist(),
        key=f"{key}-actions",
        description="Per-action usage and judge scores",
    )
    return refs
