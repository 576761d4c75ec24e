"""A stage's progress, shown twice: as a Prefect progress artifact (the UI) and as events for
local watchers (the CLI's bars, see spark_core.progress). Inside the pipeline flow, each
stage's progress also moves the pipeline's own bar on the parent run's page."""

from __future__ import annotations

from contextvars import ContextVar
from uuid import UUID

from prefect.artifacts import create_progress_artifact, update_progress_artifact

from spark_core.progress import publish


class PipelineProgress:
    """The whole pipeline as one bar on the parent run: ``stages`` equal shares, each filled
    by the running stage's own progress."""

    def __init__(self, stages: list[str]):
        self.stages, self.current = stages, 0
        self._artifact: UUID = create_progress_artifact(
            0.0, description="pipeline: " + " -> ".join(stages)
        )

    def stage(self, name: str) -> None:
        self.current = self.stages.index(name)
        self.fraction(0.0)

    def fraction(self, done: float) -> None:
        share = (self.current + min(max(done, 0.0), 1.0)) / len(self.stages)
        update_progress_artifact(self._artifact, 100.0 * share)


PIPELINE: ContextVar[PipelineProgress | None] = ContextVar("spark_pipeline", default=None)


class StageProgress:
    """``done`` of ``total`` units of one stage (questions, trainers, policies)."""

    def __init__(self, what: str, total: int, description: str):
        self.what, self.total, self.done = what, max(total, 1), 0
        self._artifact = create_progress_artifact(0.0, description=description)
        publish(what, 0, self.total)

    def update(self, done: int) -> None:
        self.done = min(done, self.total)
        update_progress_artifact(self._artifact, 100.0 * self.done / self.total)
        publish(self.what, self.done, self.total)
        pipeline = PIPELINE.get()
        if pipeline is not None:
            pipeline.fraction(self.done / self.total)

    def advance(self, units: int = 1) -> None:
        self.update(self.done + units)
