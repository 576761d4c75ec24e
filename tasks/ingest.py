"""Ingest task: source -> validated, sampled, split ``questions`` (+ ``questions_rejected``)."""

from __future__ import annotations

from prefect import get_run_logger, task

from spark_core.artifacts import ArtifactRef, stage_key
from spark_core.config import RunConfig
from spark_core.questions import QUESTIONS_SCHEMA, REJECTED_SCHEMA, STAGE_VERSION, ingest_records
from spark_core.sources import read_source, source_hash
from tasks.caching import cache_key_from, store_for


def ingest_key(cfg: RunConfig) -> str:
    data = cfg.data
    return stage_key(
        "ingest",
        STAGE_VERSION,
        cfg.section("data"),
        {"source": source_hash(data.source, data.hub_split, data.hub_revision)},
    )


def ingest_outputs(key: str, **_: object) -> list[str]:
    prefix = f"ingest/{key[:16]}"
    return [f"{prefix}/questions_rejected", f"{prefix}/questions"]


@task(
    name="ingest-questions",
    cache_key_fn=cache_key_from(ingest_key, ingest_outputs),
    persist_result=True,
)
def ingest_questions(cfg: RunConfig) -> dict[str, ArtifactRef]:
    """Read the source, validate and sample it, and write the two artifacts."""
    logger = get_run_logger()
    key = ingest_key(cfg)
    store = store_for(cfg)
    rejected_name, questions_name = ingest_outputs(key)
    if store.exists(questions_name) and store.exists(rejected_name):
        logger.info("ingest outputs for key %s already exist; reusing them", key[:16])
        return {"questions": store.ref(questions_name), "rejected": store.ref(rejected_name)}

    data = cfg.data
    records = read_source(data.source, data.hub_split, data.hub_revision)
    result = ingest_records(records, data)
    inputs = {"source": source_hash(data.source, data.hub_split, data.hub_revision)}
    meta = {"stage": "ingest", "config": cfg.section("data"), "inputs": inputs}
    # questions last: its presence marks the stage complete.
    rejected = store.write(rejected_name, result.rejected, REJECTED_SCHEMA, **meta)
    questions = store.write(questions_name, result.questions, QUESTIONS_SCHEMA, **meta)
    logger.info(
        "ingest: read %(read)d rows, accepted %(accepted)d, rejected %(rejected)d, "
        "sampled %(sampled)d (train %(train)d / eval %(eval)d)",
        result.stats,
    )
    return {"questions": questions, "rejected": rejected}
