"""The ``synthesize`` flow: step-wise rollouts with judged candidates and rarity-first
selection. Per step, question shards run in parallel; the selection is a barrier over all of
them."""

from __future__ import annotations

from prefect import flow, unmapped

from spark_core.artifacts import ArtifactRef
from spark_core.config import RunConfig
from tasks.ingest import ingest_questions
from tasks.progress import StageProgress
from tasks.runners import task_runner_for
from tasks.synthesize import (
    active_count,
    finalize,
    plan_synthesis,
    rollout_shard,
    select,
    summarize_synthesis,
)


@flow(name="synthesize", log_prints=True)
def synthesize(config: RunConfig, questions: ArtifactRef | None = None) -> dict:
    """Roll out every train question for up to ``rollout.steps`` steps."""
    if questions is None:
        questions = ingest_questions(config)["questions"]
    plan, state = plan_synthesis(config, questions)
    total = sum(len(s) for s in plan.shards)
    progress = StageProgress("synthesize", total, "questions finished (synthesis)")
    usage, selected, shards_seen = None, [], []
    with task_runner_for(config) as runner:
        for step in range(1, config.rollout.steps + 1):
            if active_count(config, state) == 0:
                break
            futures = runner.map(
                rollout_shard,
                {
                    "cfg": unmapped(config),
                    "plan": unmapped(plan),
                    "step": unmapped(step),
                    "shard": list(range(len(plan.shards))),
                    "state": unmapped(state),
                },
            )
            shards = [f.result() for f in futures]
            chosen, usage, state = select(config, plan, step, shards, state, usage)
            selected.append(chosen)
            shards_seen.extend(shards)
            progress.update(total - active_count(config, state))
    finals = finalize(config, plan, state)
    progress.update(total)
    summary = summarize_synthesis(config, plan, selected, shards_seen, finals)
    return {
        "plan": plan,
        "selected": selected,
        "shards": shards_seen,
        "final_answers": finals,
        "summary": summary,
    }
