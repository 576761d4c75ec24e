"""The SPaRK pipeline, in the order of the paper's figure.

Stages land here as they are built: ingest today; synthesize -> label -> train -> evaluate
follow (see the open issues).
"""

from __future__ import annotations

from prefect import flow

from flows.ingest import ingest
from spark_core.config import RunConfig


@flow(name="pipeline", log_prints=True)
def pipeline(config: RunConfig) -> dict:
    """Run every stage of a SPaRK run; each stage is cached on the content of its inputs."""
    questions = ingest(config)
    return {"ingest": questions}
