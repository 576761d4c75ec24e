"""Common-state tasks: each local policy's P(action | step-1 state) on every held-out question
(one cached unit per policy), then one table of them all with the sampled baselines' tempered
rows (``spark_core.evaluation.common_states``)."""

from __future__ import annotations

import pyarrow as pa
from prefect import get_run_logger, task

from spark_core.artifacts import ArtifactRef, canonical_hash, stage_key
from spark_core.config import RunConfig
from spark_core.evaluation.common_schema import COMMON_STATES_SCHEMA
from spark_core.evaluation.common_states import score_common_states, with_sampled
from spark_core.evaluation.policies import EvaluatedPolicy, evaluated_policy
from spark_core.metrics import entropy_bits
from spark_core.models.registry import REGISTRY
from tasks.caching import Unit, cached_unit, rows, store_for, unit_task

STAGE_VERSION = "1"


def scored_here(cfg: RunConfig, source: dict) -> bool:
    """A policy whose exact distribution this process can score: the local generator, with
    or without an adapter, greedy (a sampled baseline is base tempered)."""
    return "adapter" in source and "temperature" not in source and cfg.generator.backend == "hf"


def common_unit(cfg: RunConfig, policy: str, questions: ArtifactRef, source: dict) -> Unit:
    sections = {
        "actions": cfg.rollout.actions,
        "policy": {k: v for k, v in source.items() if k != "adapter"},
        "seed": evaluated_policy(cfg, policy).seed,
    }
    key = stage_key("common-states", STAGE_VERSION, sections, {"questions": questions.content_hash})
    return Unit(
        "evaluate",
        key,
        {f"evaluate/{key[:16]}/common_{policy}": COMMON_STATES_SCHEMA},
        sections,
        {"questions": questions.content_hash, "policy": canonical_hash(source)},
        what=f"common states {policy}",
    )


@unit_task("common-states", common_unit, "common-states-{policy}")
def score_common(cfg: RunConfig, policy: str, questions: ArtifactRef, source: dict) -> ArtifactRef:
    """One policy's P(action | step-1 state) on every held-out question."""
    from tasks.evaluate import generator_for, held_out

    unit = common_unit(cfg, policy, questions, source)

    def compute():
        split = held_out(cfg, questions)
        backend = generator_for(cfg, policy, source).backend
        scored = score_common_states(
            backend, evaluated_policy(cfg, policy), split, cfg.rollout.actions
        )
        mean_bits = sum(entropy_bits(p) for p in scored.column("probs").to_pylist()) / len(split)
        get_run_logger().info(
            "%s: P(action | step-1 state) on %d held-out questions, mean %.2f bits",
            policy,
            len(split),
            mean_bits,
        )
        return [scored]

    try:
        return cached_unit(store_for(cfg), unit, compute, lambda r: r[0])
    finally:
        REGISTRY.release_policies()


@task(name="common-states-table", task_run_name="common-states-table")
def common_state_table(
    cfg: RunConfig, scored: dict[str, ArtifactRef], sampled: list[EvaluatedPolicy]
) -> ArtifactRef:
    """Every scored policy's rows plus each sampled baseline's (base tempered), one table.
    ``scored`` holds base's rows when a baseline needs them, even if base is not evaluated."""
    store = store_for(cfg)
    table = rows(store, list(scored.values()), COMMON_STATES_SCHEMA)
    base = [r for r in table if r["policy"] == "base" and r["seed"] == -1]
    if "base" not in cfg.evaluation.policies:
        table = [r for r in table if r["policy"] != "base"]
    table += with_sampled(base, sampled)
    key = canonical_hash([ref.content_hash for ref in scored.values()] + [repr(sampled)])[:16]
    return store.write(
        f"evaluate/common_states_{key}",
        pa.Table.from_pylist(table, schema=COMMON_STATES_SCHEMA),
        COMMON_STATES_SCHEMA,
        stage="evaluate",
        config=cfg.section("evaluation"),
        inputs={"common": key},
    )
