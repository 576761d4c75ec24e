"""Label task: synthesis artifacts -> ``trajectories`` and ``candidate_pool``."""

from __future__ import annotations

from prefect import get_run_logger, task

from spark_core.artifacts import ArtifactRef, canonical_hash, stage_key
from spark_core.barrier import SELECTED_SCHEMA
from spark_core.config import RunConfig
from spark_core.labeling import (
    CANDIDATE_POOL_SCHEMA,
    CODE_VERSION,
    TRAJECTORIES_SCHEMA,
    candidate_pool,
    label,
)
from spark_core.questions import QUESTIONS_SCHEMA
from spark_core.rollout import CANDIDATES_SCHEMA, FINAL_SCHEMA, SCORES_SCHEMA
from tasks.caching import cache_key_from, existing, store_for


def _inputs(synthesis: dict) -> dict[str, str]:
    return {
        "questions": synthesis["plan"].questions.content_hash,
        "selected": canonical_hash([r.content_hash for r in synthesis["selected"]]),
        "candidates": canonical_hash([r.content_hash for s in synthesis["shards"] for r in s]),
        "final_answers": synthesis["final_answers"].content_hash,
    }


def label_key(cfg: RunConfig, synthesis: dict) -> str:
    sections = {"rewards": cfg.section("rewards"), "actions": cfg.rollout.actions}
    return stage_key("label", CODE_VERSION, sections, _inputs(synthesis))


def label_outputs(key: str, **_: object) -> list[str]:
    return [f"label/{key[:16]}/candidate_pool", f"label/{key[:16]}/trajectories"]


@task(
    name="label-trajectories",
    cache_key_fn=cache_key_from(label_key, label_outputs),
    persist_result=True,
)
def label_trajectories(cfg: RunConfig, synthesis: dict) -> dict[str, ArtifactRef]:
    """Composite rewards, returns and advantages for every selected step."""
    store = store_for(cfg)
    names = label_outputs(label_key(cfg, synthesis))
    done = existing(store, names)
    if done:
        return {"candidate_pool": done[0], "trajectories": done[1]}
    plan = synthesis["plan"]
    questions = store.read(plan.questions.name, QUESTIONS_SCHEMA).to_pylist()
    selected = [
        r
        for ref in synthesis["selected"]
        for r in store.read(ref.name, SELECTED_SCHEMA).to_pylist()
    ]
    finals = store.read(synthesis["final_answers"].name, FINAL_SCHEMA).to_pylist()
    candidates = [
        r for c, _ in synthesis["shards"] for r in store.read(c.name, CANDIDATES_SCHEMA).to_pylist()
    ]
    scores = [
        r for _, s in synthesis["shards"] for r in store.read(s.name, SCORES_SCHEMA).to_pylist()
    ]
    trajectories = label(cfg, questions, selected, finals)
    pool = candidate_pool(cfg, questions, selected, candidates, scores)
    meta = {"stage": "label", "config": cfg.section("rewards"), "inputs": _inputs(synthesis)}
    pool_ref = store.write(names[0], pool, CANDIDATE_POOL_SCHEMA, **meta)
    traj_ref = store.write(names[1], trajectories, TRAJECTORIES_SCHEMA, **meta)
    correct = sum(trajectories.column("correct").to_pylist())
    get_run_logger().info(
        "labelled %d steps of %d questions (%d step rows correct)",
        trajectories.num_rows,
        len({r["question_id"] for r in selected}),
        correct,
    )
    return {"candidate_pool": pool_ref, "trajectories": traj_ref}
