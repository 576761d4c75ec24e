"""Train tasks: one cached task per trainer of ``training.trainers`` (the SFT baseline, SPaRK's
offline PPO, step-level DPO). Adapters are PEFT folders under ``train/<key16>/<policy>/adapter``,
named by their trainer, the policy they are evaluated as (``sft``, ``ppo``, ``dpo``); a killed
task resumes from its last checkpoint when rerun."""

from __future__ import annotations

import gc
from pathlib import Path

from prefect import get_run_logger

from spark_core.artifacts import ArtifactRef, ArtifactStore, stage_key
from spark_core.config import RunConfig
from spark_core.evaluation.policies import seeded_name
from spark_core.labeling.trajectories import CANDIDATE_POOL_SCHEMA, TRAJECTORIES_SCHEMA
from spark_core.models.hf.default_model import resolve_model
from spark_core.models.registry import REGISTRY
from spark_core.training.registry import TRAIN_METRICS_SCHEMA, TRAINERS, metrics_table
from tasks.caching import Unit, cached_unit, rows, store_for, unit_task
from tasks.results import Adapter, Adapters, Labels

STAGE_VERSION = "4"  # 4: pi_old from the reference pass on the fitted row, kl_exact, kl_target
# 3: behaviour pi_old, one truncation rule, sft_data
# (PPO's policy once named "spark": its key is train-ppo now, a new key, so nothing to bump)


def train_unit(cfg: RunConfig, trainer: str, labels: Labels) -> Unit:
    """A trainer's key holds the shared training settings, ``training.lora`` and its own
    group (``training.sft``, ``.ppo`` or ``.dpo``), never another trainer's: adding ``dpo``,
    or changing DPO's beta, keeps the SFT and PPO adapters' keys. Which trainers run
    (``trainers``) never changes what one writes."""
    if trainer not in TRAINERS:
        raise ValueError(f"unknown trainer {trainer!r}; known: {', '.join(TRAINERS)}")
    policy = trainer  # the policy its adapter is evaluated as
    inputs = {"trajectories": labels.trajectories.content_hash}
    if TRAINERS[trainer].uses_pool(cfg):
        inputs["candidate_pool"] = labels.candidate_pool.content_hash
    # seeds: each seed's adapter is its own unit, keyed by training.seed (cfg.for_seed)
    # activation_checkpointing trades memory for time: the same gradients, the same adapter
    ignored = {
        "trainers",
        "seeds",
        "activation_checkpointing",
        *(other for other in TRAINERS if other != trainer),  # the other trainers' groups
    }
    training = {k: v for k, v in cfg.section("training").items() if k not in ignored}
    sections = {"training": training, "policy": cfg.generator.name}
    key = stage_key(f"train-{policy}", STAGE_VERSION, sections, inputs)
    return Unit(
        "train",
        key,
        {f"train/{key[:16]}/{policy}_metrics": TRAIN_METRICS_SCHEMA},
        cfg.section("training"),
        {"trajectories": labels.trajectories.content_hash},
        files=(f"{_adapter_dir(key, policy)}/adapter_config.json",),
        what=policy,
    )


def _adapter_dir(key: str, policy: str) -> str:
    """Where a trained adapter lives, relative to the artifact root."""
    return f"train/{key[:16]}/{policy}/adapter"


def _adapter(store: ArtifactStore, unit: Unit, metrics: ArtifactRef) -> Adapter:
    return Adapter(store.folder_uri(_adapter_dir(unit.key, unit.what)), metrics)


def work_dir(cfg: RunConfig, key: str, policy: str) -> Path:
    """Training runs on local disk: in the artifact folder when it is local, otherwise in the
    run folder (the finished adapter is then copied to the artifact root)."""
    store = store_for(cfg)
    if store.is_local:
        return Path(store.fs_path(f"train/{key[:16]}/{policy}"))
    return cfg.runtime.run_dir("train", key[:16], policy)


def training_runs(cfg: RunConfig) -> list[tuple[str, str, RunConfig]]:
    """(rollout name, trainer, config) of every adapter to train: each trainer once per
    training seed, named as evaluation names its rollout (``ppo``, or ``ppo-seed1``...)."""
    seeds = cfg.training.seed_list()
    return [
        (seeded_name(trainer, seed, seeds), trainer, cfg.for_seed(seed))
        for trainer in cfg.training.trainers
        for seed in seeds
    ]


def trained_adapters(cfg: RunConfig, labels: Labels) -> Adapters | None:
    """Every configured adapter, by rollout name, when all were trained already (here or by
    a train deployment)."""
    store = store_for(cfg)
    units = {name: train_unit(c, t, labels) for name, t, c in training_runs(cfg)}
    if not all(u.done(store) for u in units.values()):
        return None
    return Adapters({n: _adapter(store, u, store.ref(*u.outputs)) for n, u in units.items()})


def train_run_name() -> str:
    """'train-sft', 'train-ppo', or 'train-ppo-seed1' when training.seed is not 0."""
    from prefect.runtime import task_run

    params = task_run.parameters
    seed = params["cfg"].training.seed
    return f"train-{params['trainer']}" + (f"-seed{seed}" if seed else "")


@unit_task("train-adapter", train_unit, train_run_name)
def train_adapter(cfg: RunConfig, trainer: str, labels: Labels) -> Adapter:
    """Train one adapter (an entry of TRAINERS) and record its metrics."""
    store = store_for(cfg)
    unit = train_unit(cfg, trainer, labels)
    policy = unit.what  # names its folders and metric rows (the trainer's name)

    def compute():
        out = work_dir(cfg, unit.key, policy)
        REGISTRY.release_models()  # the trainer loads its own copy: free the stages' models
        history = TRAINERS[trainer].train(
            cfg,
            rows(store, [labels.trajectories], TRAJECTORIES_SCHEMA),
            resolve_model(cfg.generator.name),
            out,
            rows(store, [labels.candidate_pool], CANDIDATE_POOL_SCHEMA),
        )
        if not store.is_local:  # trained in the run folder: publish beside the artifacts
            store.put_folder(out / "adapter", _adapter_dir(unit.key, policy))
        get_run_logger().info(
            "trained %s adapter: %d logged steps, final loss %s -> %s",
            trainer,
            len(history),
            (history[-1] if history else {}).get("loss"),
            store.folder_uri(_adapter_dir(unit.key, policy)),
        )
        return [metrics_table(policy, history)]

    try:
        return cached_unit(store, unit, compute, lambda r: _adapter(store, unit, r[0]))
    finally:
        gc.collect()  # the trainer's model, optimizer and batches, before the next trainer
