"""The ``evaluate`` flow: base vs SFT vs SPaRK (and any extra policy) on the eval split."""

from __future__ import annotations

from prefect import flow

from flows.refuse import checked
from flows.zombies import clean_up_earlier_attempt, on_crashed
from spark_core.artifacts import ArtifactRef
from spark_core.config import RunConfig
from spark_core.evaluation.policies import EvaluatedPolicy, evaluated_policies
from tasks.common_states import common_state_table, score_common, scored_here
from tasks.evaluate import evaluate_one, policy_source, report
from tasks.ingest import ingest_questions
from tasks.memory import measured
from tasks.progress import StageProgress
from tasks.results import Adapters, Report
from tasks.runners import task_runner_for
from tasks.stage_stops import first_stop


@flow(name="evaluate", on_crashed=[on_crashed], validate_parameters=False)
@measured("evaluate")
def evaluate(config: RunConfig, adapters: Adapters | None = None) -> Report:
    """Per-category accuracy with CIs, paired tests and tool-selection entropy, per policy."""
    config, refused = checked(config)
    if refused:
        return refused
    clean_up_earlier_attempt()
    questions = ingest_questions(config).questions
    targets = evaluated_policies(config)  # base@T per temperature, trained ones per seed
    if adapters is None and any(t.trained for t in targets):
        from flows.train import train

        adapters = train(config)
    paths = adapters.uris() if adapters else {}
    paths.update(config.evaluation.extra_adapters)
    sources = {t.name: policy_source(config, t.name, paths) for t in targets}
    common = common_states(config, questions, targets, sources)
    progress = StageProgress("evaluate", len(targets), "policies evaluated")
    # threads share one in-process model whose active adapter is per policy: one at a time
    with task_runner_for(config, threads=1) as runner:
        futures = [
            runner.submit(
                evaluate_one,
                {"cfg": config, "policy": t, "questions": questions, "source": sources[t]},
            )
            for t in sources
        ]
        rows = []
        for k, (target, future) in enumerate(zip(targets, futures, strict=True), 1):
            future.wait()
            if stop := first_stop([future.state]):  # a cost limit: rerun to resume
                return stop
            rows.append(future.result())
            progress.advance(detail=f"{target.name} evaluated ({k}/{len(targets)} policies)")
    return report(config, rows, common)


def common_states(
    config: RunConfig, questions: ArtifactRef, targets: list[EvaluatedPolicy], sources: dict
) -> ArtifactRef | None:
    """Every local policy's P(action | step-1 state) on every held-out question, with the
    sampled baselines as base tempered (None when evaluation.common_states is off)."""
    if not config.evaluation.common_states:
        return None
    sampled = [t for t in targets if t.temperature > 0]
    scored = {n: src for n, src in sources.items() if scored_here(config, src)}
    if sampled and "base" not in scored and scored_here(config, policy_source(config, "base", {})):
        scored["base"] = policy_source(config, "base", {})
    refs = {name: score_common(config, name, questions, src) for name, src in scored.items()}
    return common_state_table(config, refs, sampled)
