"""The ``ingest`` flow: MMLU-Pro (hub, file or bundled sample) -> ``questions``."""

from __future__ import annotations

from prefect import flow

from spark_core.artifacts import ArtifactRef
from spark_core.config import RunConfig
from tasks.ingest import ingest_questions


@flow(name="ingest", log_prints=True)
def ingest(config: RunConfig) -> dict[str, ArtifactRef]:
    """Validate, sample and split the questions of a run."""
    return ingest_questions(config)
