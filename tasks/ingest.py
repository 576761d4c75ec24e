"""Ingest task: source -> validated, sampled, split ``questions`` (+ ``questions_rejected``)."""

from __future__ import annotations

from prefect import get_run_logger

from spark_core.artifacts import stage_key
from spark_core.config import RunConfig
from spark_core.data.questions import (
    QUESTIONS_SCHEMA,
    REJECTED_SCHEMA,
    STAGE_VERSION,
    ingest_records,
)
from spark_core.data.sources import read_source, source_hash
from tasks.caching import Unit, cached_unit, store_for, unit_task
from tasks.results import Questions


def ingest_unit(cfg: RunConfig) -> Unit:
    data = cfg.data
    inputs = {"source": source_hash(data.source, data.hub_split, data.hub_revision)}
    key = stage_key("ingest", STAGE_VERSION, cfg.section("data"), inputs)
    prefix = f"ingest/{key[:16]}"
    outputs = {
        f"{prefix}/questions_rejected": REJECTED_SCHEMA,
        f"{prefix}/questions": QUESTIONS_SCHEMA,
    }
    return Unit("ingest", key, outputs, cfg.section("data"), inputs)


@unit_task("ingest-questions", ingest_unit)
def ingest_questions(cfg: RunConfig) -> Questions:
    """Read the source, validate and sample it, and write the two artifacts."""

    def compute():
        data = cfg.data
        result = ingest_records(read_source(data.source, data.hub_split, data.hub_revision), data)
        get_run_logger().info(
            "ingest: read %(read)d rows, accepted %(accepted)d, rejected %(rejected)d, "
            "sampled %(sampled)d (train %(train)d / eval %(eval)d)",
            result.stats,
        )
        return [result.rejected, result.questions]

    return cached_unit(store_for(cfg), ingest_unit(cfg), compute, lambda r: Questions(r[1], r[0]))
