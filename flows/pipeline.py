"""The SPaRK pipeline, in the order of the paper's figure.

ingest -> synthesize -> label -> train -> evaluate.
"""

from __future__ import annotations

from prefect import flow
from prefect.deployments import run_deployment

from flows.evaluate import evaluate
from flows.ingest import ingest
from flows.label import label
from flows.synthesize import synthesize
from flows.train import train
from spark_core.artifacts import ArtifactRef
from spark_core.config import RunConfig
from tasks.train import trained_adapters


@flow(name="pipeline")
def pipeline(config: RunConfig) -> dict:
    """Run every stage of a SPaRK run; each stage is cached on the content of its inputs."""
    questions = ingest(config)
    synthesis = synthesize(config, questions["questions"], return_state=True)
    if synthesis.is_failed():  # a planned stop says why in its message: no traceback
        return synthesis
    synthesis = synthesis.result()
    trajectories = label(config, synthesis)
    if config.runtime.train_deployment:
        adapters = train_elsewhere(config, trajectories)
    else:
        adapters = train(config, trajectories)
    report = evaluate(config, adapters)
    return {
        "ingest": questions,
        "synthesize": synthesis,
        "label": trajectories,
        "train": adapters,
        "evaluate": report,
    }


def train_elsewhere(config: RunConfig, labels: dict[str, ArtifactRef]) -> dict:
    """Run the train stage as a deployment (e.g. on a GPU work pool) and wait for it; the
    adapters come back through the shared artifact root."""
    name = config.runtime.train_deployment
    run = run_deployment(name, parameters={"config": config.model_dump(mode="json")}, timeout=None)
    if not run.state or not run.state.is_completed():
        state = run.state.name if run.state else "unknown"
        raise RuntimeError(f"train deployment {name} ended {state} (flow run {run.name})")
    adapters = trained_adapters(config, labels)
    if adapters is None:
        raise RuntimeError(
            f"train deployment {name} completed but its adapters are not under "
            f"{config.runtime.artifacts_url()}: the GPU worker and this flow must share "
            "runtime.artifacts_root (s3://... or a shared disk)"
        )
    return adapters
