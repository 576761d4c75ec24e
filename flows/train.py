"""The ``train`` flow: the SFT baseline and the SPaRK (offline PPO) adapter."""

from __future__ import annotations

from prefect import flow

from flows.zombies import clean_up_earlier_attempt, on_crashed
from spark_core.config import RunConfig
from tasks.progress import StageProgress
from tasks.results import Adapters, Labels
from tasks.train import TRAINERS, train_adapter


@flow(name="train", on_crashed=[on_crashed])
def train(config: RunConfig, labels: Labels | None = None) -> Adapters:
    """Train every adapter on the labelled trajectories (labels them first when not given)."""
    clean_up_earlier_attempt()
    if labels is None:
        from flows.label import label

        labels = label(config)
    progress = StageProgress("train", len(TRAINERS), "adapters trained")
    adapters = {}
    for trainer in TRAINERS:
        adapters[trainer] = train_adapter(config, trainer, labels)
        progress.advance()
    return Adapters(adapters)
