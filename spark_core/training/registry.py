"""The table of trainers ``training.trainers`` names (the SFT baseline, SPaRK's offline PPO,
step-level DPO), and the metrics table every trainer's logged steps go into."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from spark_core.config import RunConfig
from spark_core.memory import large_frees_returned
from spark_core.training.adapter_run import METRIC_KEYS
from spark_core.training.dpo import train_dpo
from spark_core.training.ppo import train_ppo
from spark_core.training.sft import train_sft

TRAIN_METRICS_SCHEMA = pa.schema(
    [pa.field("trainer", pa.string(), nullable=False), pa.field("step", pa.int64(), nullable=False)]
    + [pa.field(k, pa.float64()) for k in METRIC_KEYS]
)


@dataclass(frozen=True)
class Trainer:
    """How a trainer is run: ``fit(cfg, trajectories, base_model, out_dir, candidate_pool)``
    returns its logged metrics; ``uses_pool(cfg)`` says whether the candidate pool is one of
    its inputs (and so part of its cache key)."""

    fit: Callable[..., list[dict]]
    uses_pool: Callable[[RunConfig], bool]

    def train(self, *args: Any) -> list[dict]:
        """``fit`` with glibc returning training's freed activations to the system, from
        loading the model to the last step (``memory.large_frees_returned``)."""
        with large_frees_returned():
            return self.fit(*args)


# every trainer of training.trainers (its config name, which is also the policy its adapter is
# evaluated as and names its folders): a new trainer is one entry here, one in
# spark_core.config.TRAINED_POLICIES, and its settings, if it has its own, a group of the same
# name in config/training.py (training.<name>: only its own adapter's cache key holds it,
# tasks/train.py)
TRAINERS: dict[str, Trainer] = {
    "sft": Trainer(train_sft, lambda cfg: cfg.training.sft.data == "greedy"),  # the baseline
    "ppo": Trainer(train_ppo, lambda cfg: cfg.training.ppo.candidates == "all"),  # SPaRK
    "dpo": Trainer(  # step-level DPO: pairs from the candidate pool only
        lambda cfg, _trajectories, base, out, pool: train_dpo(cfg, pool, base, out),
        lambda cfg: True,
    ),
}


def metrics_table(policy: str, history: list[dict[str, Any]]) -> pa.Table:
    """A trainer's logged steps as rows of ``TRAIN_METRICS_SCHEMA`` (missing metrics null)."""
    metrics = [{"trainer": policy, **dict.fromkeys(METRIC_KEYS), **h} for h in history]
    return pa.Table.from_pylist(metrics, schema=TRAIN_METRICS_SCHEMA)
