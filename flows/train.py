"""The ``train`` flow: the adapters of ``training.trainers`` (SFT baseline, SPaRK's offline
PPO, step-level DPO)."""

from __future__ import annotations

from prefect import flow

from flows.refuse import checked
from flows.zombies import clean_up_earlier_attempt, on_crashed
from spark_core.config import TRAINED_POLICY, RunConfig
from tasks.memory import measured
from tasks.progress import StageProgress
from tasks.results import Adapters, Labels
from tasks.train import train_adapter


@flow(name="train", on_crashed=[on_crashed], validate_parameters=False)
@measured("train")
def train(config: RunConfig, labels: Labels | None = None) -> Adapters:
    """Train the configured adapters on the labels (labels first when not given), named by
    the policy each is evaluated as (PPO's: "spark")."""
    config, refused = checked(config)
    if refused:
        return refused
    clean_up_earlier_attempt()
    if labels is None:
        from flows.label import label

        labels = label(config)
    trainers = config.training.trainers
    progress = StageProgress("train", len(trainers), "adapters trained")
    adapters = {}
    for k, trainer in enumerate(trainers):
        progress.show(k / len(trainers), f"training {trainer} ({k + 1}/{len(trainers)})")
        adapters[TRAINED_POLICY[trainer]] = train_adapter(config, trainer, labels)
        progress.advance(detail=f"{trainer} trained ({k + 1}/{len(trainers)} adapters)")
    return Adapters(adapters)
