"""The SPaRK pipeline, in the order of the paper's figure.

ingest -> synthesize -> label -> train -> evaluate.
"""

from __future__ import annotations

from prefect import flow

from flows.evaluate import evaluate
from flows.ingest import ingest
from flows.label import label
from flows.synthesize import synthesize
from flows.train import train
from spark_core.config import RunConfig


@flow(name="pipeline")
def pipeline(config: RunConfig) -> dict:
    """Run every stage of a SPaRK run; each stage is cached on the content of its inputs."""
    questions = ingest(config)
    synthesis = synthesize(config, questions["questions"])
    trajectories = label(config, synthesis)
    adapters = train(config, trajectories)
    report = evaluate(config, adapters)
    return {
        "ingest": questions,
        "synthesize": synthesis,
        "label": trajectories,
        "train": adapters,
        "evaluate": report,
    }
