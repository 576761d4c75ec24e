"""A stage's progress, shown twice: as a Prefect progress artifact (the UI) and as events for
local watchers (the CLI's bars, see spark_core.progress). Inside the pipeline flow, each
stage's progress also moves the pipeline's own bar on the parent run's page.

The UI's artifact card shows a progress artifact's *description*, not its bar, on one line
that it cuts short: so every update rewrites the description, the number first and then the
words ("25% — synthesize: step 1/2, shard 1/2 rolled out"), the same text on the stage's card
and on the pipeline's."""

from __future__ import annotations

from contextvars import ContextVar
from uuid import UUID

from prefect.artifacts import create_progress_artifact, update_progress_artifact

from spark_core.progress import publish


def described(text: str, share: float) -> str:
    """'25% — synthesize: shard 1/2 rolled out': the number first (the card cuts the line)."""
    return f"{100.0 * min(max(share, 0.0), 1.0):.0f}% — {text}"


class PipelineProgress:
    """The whole pipeline as one bar on the parent run: ``stages`` equal shares, each filled
    by the running stage's own progress."""

    def __init__(self, stages: list[str]):
        self.stages, self.current = stages, 0
        _retire_earlier_attempts()
        self._artifact: UUID = create_progress_artifact(
            0.0, description=described("pipeline: " + " -> ".join(stages), 0.0)
        )

    def stage(self, name: str) -> None:
        self.current = self.stages.index(name)
        self.fraction(0.0, f"{name} starting")

    def fraction(self, done: float, detail: str = "") -> None:
        share = (self.current + min(max(done, 0.0), 1.0)) / len(self.stages)
        stage = f"stage {self.current + 1}/{len(self.stages)}"
        text = f"pipeline: {stage}, {detail or self.stages[self.current]}"
        update_progress_artifact(self._artifact, 100.0 * share, described(text, share))


def _retire_earlier_attempts() -> None:
    """On a retry, the killed attempt's card would stay at its last figure beside the new
    one's: say on it that it was an earlier attempt."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import ArtifactUpdate
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        ArtifactFilterType,
    )
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    if ctx is None or ctx.flow_run is None or ctx.flow_run.run_count <= 1:
        return
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[ctx.flow_run.id]),
                type=ArtifactFilterType(any_=["progress"]),
            )
        )
        for old in found:
            text = old.description or ""
            if not text.startswith(EARLIER):
                update = ArtifactUpdate(data=old.data, description=EARLIER + text)
                client.update_artifact(artifact_id=old.id, artifact=update)


EARLIER = "earlier attempt, stopped at "
PIPELINE: ContextVar[PipelineProgress | None] = ContextVar("spark_pipeline", default=None)


class StageProgress:
    """``done`` of ``total`` units of one stage (questions, trainers, policies); ``unit``
    names them in the card's text ("adapters trained")."""

    def __init__(self, what: str, total: int, unit: str):
        self.what, self.unit, self.total, self.done = what, unit, max(total, 1), 0
        self._artifact = create_progress_artifact(
            0.0, description=described(f"{what}: 0/{self.total} {unit}", 0.0)
        )
        publish(what, 0, self.total)

    def update(self, done: int, detail: str = "", share: float | None = None) -> None:
        """``done`` units finished; the card shows ``share`` when given (a stage whose units
        finish unevenly, such as questions over synthesis steps), else done/total."""
        self.done = min(done, self.total)
        publish(self.what, self.done, self.total)
        text = detail or f"{self.done}/{self.total} {self.unit}"
        self.show(self.done / self.total if share is None else share, text)

    def advance(self, units: int = 1, detail: str = "") -> None:
        self.update(self.done + units, detail)

    def show(self, share: float, detail: str) -> None:
        """Move the card (and the pipeline's) to ``share`` with ``detail`` in words: for
        progress finer than the counted units (a shard of a step)."""
        text = f"{self.what}: {detail}"
        update_progress_artifact(self._artifact, 100.0 * share, described(text, share))
        pipeline = PIPELINE.get()
        if pipeline is not None:
            pipeline.fraction(share, text)
