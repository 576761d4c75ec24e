"""The ``train`` flow: the SFT baseline and the SPaRK (offline PPO) adapter."""

from __future__ import annotations

from prefect import flow

from spark_core.artifacts import ArtifactRef
from spark_core.config import RunConfig
from tasks.train import train_adapter


@flow(name="train")
def train(config: RunConfig, labels: dict[str, ArtifactRef] | None = None) -> dict:
    """Train both adapters on the labelled trajectories (labels them first when not given)."""
    if labels is None:
        from flows.label import label

        labels = label(config)
    sft = train_adapter(config, "sft", labels)
    spark = train_adapter(config, "spark", labels)
    return {"sft": sft, "spark": spark}
