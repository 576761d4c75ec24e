"""A stage's progress, shown twice: as a Prefect progress artifact (the UI) and as events for
local watchers (the CLI's bars, see spark_core.progress)."""

from __future__ import annotations

from prefect.artifacts import create_progress_artifact, update_progress_artifact

from spark_core.progress import publish


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

    def advance(self, units: int = 1) -> None:
        self.update(self.done + units)
