"""The SPaRK pipeline, in the order of the paper's figure.

ingest -> synthesize -> label -> train -> evaluate.

The parent run's page is the run's summary: a stage table (cached or run, duration, counts,
model calls, cost, links), the evaluation headline with its plots, one log line per stage and
one progress bar for the whole pipeline (see flows/summary.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from prefect import flow, get_run_logger
from prefect.deployments import run_deployment
from prefect.states import State

from flows import summary
from flows.evaluate import evaluate
from flows.ingest import ingest
from flows.label import label
from flows.refuse import checked
from flows.synthesize import synthesize
from flows.train import train
from flows.zombies import clean_up_earlier_attempt, on_crashed
from spark_core.config import RunConfig
from tasks.memory import LAST
from tasks.progress import PIPELINE, PipelineProgress
from tasks.results import Adapters, Labels, PipelineResult
from tasks.stage_stops import first_stop
from tasks.train import trained_adapters

STAGES = ["ingest", "synthesize", "label", "train", "evaluate"]


@flow(name="pipeline", on_crashed=[on_crashed], validate_parameters=False)
def pipeline(config: RunConfig) -> PipelineResult | State:
    """Run every stage of a SPaRK run; each stage is cached on the content of its inputs."""
    config, refused = checked(config)
    if refused:
        return refused
    clean_up_earlier_attempt()
    started = time.time()
    progress = PipelineProgress(STAGES)
    token = PIPELINE.set(progress)
    rows: list[summary.StageRow] = []
    out: dict[str, Any] = {}

    def stage(name: str, fn: Callable[..., Any], *args: Any) -> Any:
        row = summary.StageRow(name)
        rows.append(row)
        progress.stage(name)
        t0 = time.monotonic()
        LAST.pop(name, None)  # a figure from an earlier run in this process is not this one's
        state = fn(*args, return_state=True)
        row.seconds = time.monotonic() - t0
        summary.record(row, state, started)
        if peak := LAST.get(name):  # measured by the stage flow itself (tasks/memory.py)
            row.memory, row.extra["peak"] = peak.line(), peak
        if stop := first_stop([state]):  # a planned stop says why in its message
            raise PlannedStop(stop)
        out[name] = state.result()  # raises when the stage failed
        summary.describe(config, row, out[name])
        summary.log(row)
        progress.fraction(1.0, f"{name} done")
        return out[name]

    try:
        questions = stage("ingest", ingest, config)
        synthesis = stage("synthesize", synthesize, config, questions.questions)
        trajectories = stage("label", label, config, synthesis)
        if config.runtime.train_deployment:
            adapters = train_elsewhere(config, trajectories)
            out["train"] = adapters
        else:
            adapters = stage("train", train, config, trajectories)
        stage("evaluate", evaluate, config, adapters)
    except PlannedStop as planned:  # no traceback: the stop's message is the whole story
        return planned.state
    finally:
        PIPELINE.reset(token)
        if rows and rows[-1].outcome == "not run":
            rows[-1].outcome = "failed"
        try:
            summary.publish(config, rows, out.get("evaluate"))
        except Exception as exc:  # never hide the stage's own error behind the summary's
            get_run_logger().warning("could not publish the pipeline summary: %r", exc)
    return PipelineResult(**out)


class PlannedStop(Exception):
    """A stage stopped on purpose (cost limit, failing judge); rerun to resume."""

    def __init__(self, state: State):
        super().__init__(state.message)
        self.state = state


def train_elsewhere(config: RunConfig, labels: Labels) -> Adapters:
    """Run the train stage as a deployment (e.g. on a GPU work pool) and wait for it; the
    adapters come back through the shared artifact root."""
    name = config.runtime.train_deployment
    params = {"config": config.model_dump(mode="json", exclude_none=True)}
    run = run_deployment(name, parameters=params, timeout=None)
    if not run.state or not run.state.is_completed():
        state = run.state.name if run.state else "unknown"
        raise RuntimeError(f"train deployment {name} ended {state} (flow run {run.name})")
    adapters = trained_adapters(config, labels)
    if adapters is None:
        raise RuntimeError(
            f"train deployment {name} completed but its adapters are not under "
            f"{config.runtime.artifacts_url()}: the GPU worker and this flow must share "
            "runtime.artifacts_root (s3://... or a shared disk)"
        )
    return adapters
