"""The ``ingest`` flow: MMLU-Pro (hub, file or bundled sample) -> ``questions``."""

from __future__ import annotations

from prefect import flow

from flows.refuse import checked
from flows.zombies import clean_up_earlier_attempt, on_crashed
from spark_core.config import RunConfig
from tasks.ingest import ingest_questions
from tasks.memory import measured
from tasks.results import Questions


@flow(name="ingest", log_prints=True, on_crashed=[on_crashed], validate_parameters=False)
@measured("ingest")
def ingest(config: RunConfig) -> Questions:
    """Validate, sample and split the questions of a run."""
    config, refused = checked(config)
    if refused:
        return refused
    clean_up_earlier_attempt()
    return ingest_questions(config)
