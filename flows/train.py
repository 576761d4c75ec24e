"""The ``train`` flow: the adapters of ``training.trainers`` (SFT baseline, SPaRK's offline
PPO, step-level DPO)."""

from __future__ import annotations

from prefect import flow

from flows.refuse import checked
from flows.zombies import clean_up_earlier_attempt, on_crashed
from spark_core.config import RunConfig
from tasks.memory import measured
from tasks.progress import StageProgress
from tasks.results import Adapters, Labels
from tasks.train import train_adapter, training_runs


@flow(name="train", on_crashed=[on_crashed], validate_parameters=False)
@measured("train")
def train(config: RunConfig, labels: Labels | None = None) -> Adapters:
    """Train the configured adapters on the labels (labels first when not given), each
    trainer once per training seed, named by the rollout each is evaluated as (its trainer's
    name: "ppo", or "ppo-seed1", ... with several seeds)."""
    config, refused = checked(config)
    if refused:
        return refused
    clean_up_earlier_attempt()
    if labels is None:
        from flows.label import label

        labels = label(config)
    runs = training_runs(config)  # each trainer once per training seed
    progress = StageProgress("train", len(runs), "adapters trained")
    adapters = {}
    for k, (name, trainer, seeded) in enumerate(runs):
        progress.show(k / len(runs), f"training {name} ({k + 1}/{len(runs)})")
        adapters[name] = train_adapter(seeded, trainer, labels)
        progress.advance(detail=f"{name} trained ({k + 1}/{len(runs)} adapters)")
    return Adapters(adapters)
