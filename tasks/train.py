"""Train tasks: one cached task per trainer (SFT baseline, SPaRK PPO). Adapters are PEFT
folders under ``train/<key16>/<trainer>/adapter``; a killed task resumes from its last
checkpoint when rerun."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
from prefect import get_run_logger, task

from spark_core.artifacts import ArtifactRef, stage_key
from spark_core.config import RunConfig
from spark_core.labeling import CANDIDATE_POOL_SCHEMA, TRAJECTORIES_SCHEMA
from spark_core.models.default_model import resolve_model
from spark_core.rl.train import METRIC_KEYS, train_ppo, train_sft
from tasks.caching import cache_key_from, is_local, store_for

TRAINERS = ("sft", "spark")  # the SFT baseline, then SPaRK (offline PPO)
CODE_VERSION = "3"  # 3: behaviour pi_old, one truncation rule, sft_data
TRAIN_METRICS_SCHEMA = pa.schema(
    [pa.field("trainer", pa.string(), nullable=False), pa.field("step", pa.int64(), nullable=False)]
    + [pa.field(k, pa.float64()) for k in METRIC_KEYS]
)


def train_key(cfg: RunConfig, trainer: str, labels: dict[str, ArtifactRef]) -> str:
    inputs = {"trajectories": labels["trajectories"].content_hash}
    if (trainer == "spark" and cfg.training.candidates == "all") or (
        trainer == "sft" and cfg.training.sft_data == "greedy"
    ):
        inputs["candidate_pool"] = labels["candidate_pool"].content_hash
    return stage_key(
        f"train-{trainer}",
        CODE_VERSION,
        {"training": cfg.section("training"), "policy": cfg.generator.name},
        inputs,
    )


def _outputs(key: str, trainer: str, **_: object) -> list[str]:
    return [f"train/{key[:16]}/{trainer}_metrics"]


def work_dir(cfg: RunConfig, key: str, trainer: str) -> Path:
    """Training runs on local disk: in the artifact folder when it is local, otherwise in the
    run folder (the finished adapter is then copied to the artifact root)."""
    store = store_for(cfg)
    if is_local(store):
        return Path(store.fs_path(f"train/{key[:16]}/{trainer}"))
    return Path(cfg.runtime.runs_dir) / cfg.runtime.run_name / "train" / key[:16] / trainer


def _adapter_dir(key: str, trainer: str) -> str:
    """Where a trained adapter lives, relative to the artifact root."""
    return f"train/{key[:16]}/{trainer}/adapter"


def _finished(cfg: RunConfig, trainer: str, key: str) -> dict | None:
    store = store_for(cfg)
    (metrics_name,) = _outputs(key, trainer)
    adapter = _adapter_dir(key, trainer)
    if store.exists(metrics_name) and store.fs.exists(
        store.fs_path(f"{adapter}/adapter_config.json")
    ):
        return {"adapter": f"{store.root}/{adapter}", "metrics": store.ref(metrics_name)}
    return None


def trained_adapters(cfg: RunConfig, labels: dict[str, ArtifactRef]) -> dict | None:
    """Both adapters when they were trained already (here or by a train deployment)."""
    found = {t: _finished(cfg, t, train_key(cfg, t, labels)) for t in TRAINERS}
    return None if None in found.values() else found


@task(
    name="train-adapter",
    cache_key_fn=cache_key_from(
        lambda cfg, trainer, labels: train_key(cfg, trainer, labels), _outputs
    ),
    persist_result=True,
)
def train_adapter(cfg: RunConfig, trainer: str, labels: dict[str, ArtifactRef]) -> dict:
    """Train one adapter ('sft' or 'spark') and record its metrics."""
    logger = get_run_logger()
    store = store_for(cfg)
    key = train_key(cfg, trainer, labels)
    (metrics_name,) = _outputs(key, trainer)
    out = work_dir(cfg, key, trainer)
    adapter_uri = f"{store.root}/{_adapter_dir(key, trainer)}"
    if done := _finished(cfg, trainer, key):
        logger.info("%s adapter for key %s already trained; reusing it", trainer, key[:16])
        return done
    rows = store.read(labels["trajectories"].name, TRAJECTORIES_SCHEMA).to_pylist()
    base = resolve_model(cfg.generator.name)
    pool = store.read(labels["candidate_pool"].name, CANDIDATE_POOL_SCHEMA).to_pylist()
    if trainer == "sft":
        history = train_sft(cfg, rows, base, out, pool)
    elif trainer == "spark":
        history = train_ppo(cfg, rows, base, out, pool)
    else:
        raise ValueError(f"unknown trainer {trainer!r}")
    if not is_local(store):  # trained in the run folder: publish beside the artifacts
        store.put_folder(out / "adapter", _adapter_dir(key, trainer))
    table = pa.Table.from_pylist(
        [{"trainer": trainer, **{k: None for k in METRIC_KEYS}, **h} for h in history],
        schema=TRAIN_METRICS_SCHEMA,
    )
    ref = store.write(
        metrics_name,
        table,
        TRAIN_METRICS_SCHEMA,
        stage="train",
        config=cfg.section("training"),
        inputs={"trajectories": labels["trajectories"].content_hash},
    )
    last = history[-1] if history else {}
    logger.info(
        "trained %s adapter: %d logged steps, final loss %s -> %s",
        trainer,
        len(history),
        last.get("loss"),
        adapter_uri,
    )
    return {"adapter": adapter_uri, "metrics": ref}
