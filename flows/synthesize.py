"""The ``synthesize`` flow: step-wise rollouts with judged candidates and rarity-first
selection. Per step, question shards run in parallel; the selection is a barrier over all of
them."""

from __future__ import annotations

from prefect import flow, unmapped

from flows.refuse import checked
from flows.zombies import clean_up_earlier_attempt, on_crashed
from spark_core.artifacts import ArtifactRef
from spark_core.config import RunConfig
from tasks.ingest import ingest_questions
from tasks.memory import measured
from tasks.progress import StageProgress
from tasks.results import Synthesis
from tasks.runners import task_runner_for
from tasks.stage_stops import first_stop, preflight_judge
from tasks.synthesize import (
    active_count,
    finalize,
    plan_synthesis,
    rollout_shard,
    select,
    summarize_synthesis,
)


@flow(name="synthesize", log_prints=True, on_crashed=[on_crashed], validate_parameters=False)
@measured("synthesize")
def synthesize(config: RunConfig, questions: ArtifactRef | None = None) -> Synthesis:
    """Roll out every train question for up to ``rollout.steps`` steps."""
    config, refused = checked(config)
    if refused:
        return refused
    clean_up_earlier_attempt()
    if questions is None:
        questions = ingest_questions(config).questions
    if stop := first_stop([preflight_judge(config, return_state=True)]):  # cannot score
        return stop
    plan, state = plan_synthesis(config, questions)
    total = sum(len(s) for s in plan.shards)
    progress = StageProgress("synthesize", total, "questions finished")
    steps, n = config.rollout.steps, len(plan.shards)
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
            progress.show((step - 1) / steps, f"step {step}/{steps}, rolling out {n} shards")
            states = []
            for k, future in enumerate(futures, 1):  # a step: n shards, then the selection
                future.wait()
                states.append(future.state)
                share = (step - 1 + k / (n + 1)) / steps
                progress.show(share, f"step {step}/{steps}, shard {k}/{n} rolled out")
            if stop := first_stop(states):
                return stop  # a planned stop (cost limit, failing judge): rerun to resume
            shards = [f.result() for f in futures]
            selection = select(config, plan, step, shards, state, usage)
            usage, state = selection.usage, selection.state
            selected.append(selection.selected)
            shards_seen.extend(shards)
            done = total - active_count(config, state)
            detail = f"step {step}/{steps} selected, {done}/{total} questions finished"
            progress.update(done, detail, share=max(step / steps, done / total))
    finals = finalize(config, plan, state, return_state=True)
    if stop := first_stop([finals]):
        return stop
    finals = finals.result()
    progress.update(total)
    summary = summarize_synthesis(config, plan, selected, shards_seen, finals)
    return Synthesis(plan, tuple(selected), tuple(shards_seen), finals, summary)
