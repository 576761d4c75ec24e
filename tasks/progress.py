"""A stage's progress, shown twice: as a Prefect progress artifact (the UI) and as events for
local watchers (the CLI's bars, see spark_core.progress). Inside the pipeline flow, each
stage's progress also moves the pipeline's own bar on the parent run's page.

The UI's artifact card shows a progress artifact's *description*, not its bar: so every
update rewrites the description in words and a number ("synthesize: step 1/2, shard 1/2 —
25%"), the same text on the stage's card and on the pipeline's."""

from __future__ import annotations

from contextvars import ContextVar
from uuid import UUID

from prefect.artifacts import create_progress_artifact, update_progress_artifact

from spark_core.progress import publish


def described(text: str, share: float) -> str:
    """'synthesize: shard 1/2 — 25%': the words first, the number last."""
    return f"{text} — {100.0 * min(max(share, 0.0), 1.0):.0f}%"


class PipelineProgress:
    """The whole pipeline as one bar on the parent run: ``stages`` equal shares, each filled
    by the running stage's own progress."""

    def __init__(self, stages: list[str]):
        self.stages, self.current = stages, 0
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
