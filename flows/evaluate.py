"""The ``evaluate`` flow: base vs SFT vs SPaRK (and any extra policy) on the eval split."""

from __future__ import annotations

from prefect import flow

from flows.refuse import checked
from flows.zombies import clean_up_earlier_attempt, on_crashed
from spark_core.config import SAMPLED_POLICY, RunConfig
from tasks.evaluate import evaluate_one, policy_source, report
from tasks.ingest import ingest_questions
from tasks.memory import measured
from tasks.progress import StageProgress
from tasks.results import Adapters, Report
from tasks.runners import task_runner_for
from tasks.stage_guards import first_stop


@flow(name="evaluate", on_crashed=[on_crashed], validate_parameters=False)
@measured("evaluate")
def evaluate(config: RunConfig, adapters: Adapters | None = None) -> Report:
    """Per-category accuracy with CIs, paired tests and tool-selection entropy, per policy."""
    config, refused = checked(config)
    if refused:
        return refused
    clean_up_earlier_attempt()
    questions = ingest_questions(config).questions
    wanted = [p for p in config.evaluation.policies if p not in ("base", SAMPLED_POLICY)]
    if adapters is None and wanted:
        from flows.train import train

        adapters = train(config)
    paths = {p: adapters.trained[p].adapter for p in wanted} if adapters else {}
    paths.update(config.evaluation.extra_adapters)
    policies = [
        *config.evaluation.policies,
        *config.evaluation.extra_adapters,
        *config.evaluation.extra_models,
    ]
    progress = StageProgress("evaluate", len(policies), "policies evaluated")
    # threads share one in-process model whose active adapter is per policy: one at a time
    with task_runner_for(config, threads=1) as runner:
        futures = [
            runner.submit(
                evaluate_one,
                {
                    "cfg": config,
                    "policy": p,
                    "questions": questions,
                    "source": policy_source(config, p, paths),
                },
            )
            for p in policies
        ]
        rows = []
        for k, (policy, future) in enumerate(zip(policies, futures, strict=True), 1):
            future.wait()
            if stop := first_stop([future.state]):  # a cost limit: rerun to resume
                return stop
            rows.append(future.result())
            progress.advance(detail=f"{policy} evaluated ({k}/{len(policies)} policies)")
    return report(config, rows)
