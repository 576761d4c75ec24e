"""Label task: synthesis artifacts -> ``trajectories`` and ``candidate_pool``."""

from __future__ import annotations

from prefect import get_run_logger

from spark_core.artifacts import canonical_hash, stage_key
from spark_core.config import RunConfig
from spark_core.data.questions import QUESTIONS_SCHEMA
from spark_core.labeling.trajectories import (
    CANDIDATE_POOL_SCHEMA,
    STAGE_VERSION,
    TRAJECTORIES_SCHEMA,
    candidate_pool,
    label,
)
from spark_core.synthesis.barrier import SELECTED_SCHEMA
from spark_core.synthesis.rollout import CANDIDATES_SCHEMA, FINAL_SCHEMA, SCORES_SCHEMA
from tasks.caching import Unit, cached_unit, rows, store_for, unit_task
from tasks.results import Labels, Synthesis


def label_unit(cfg: RunConfig, synthesis: Synthesis) -> Unit:
    inputs = {
        "questions": synthesis.plan.questions.content_hash,
        "selected": canonical_hash([r.content_hash for r in synthesis.selected]),
        "candidates": canonical_hash(
            [r.content_hash for s in synthesis.shards for r in (s.candidates, s.scores)]
        ),
        "final_answers": synthesis.final_answers.content_hash,
    }
    sections = {"rewards": cfg.section("rewards"), "actions": cfg.rollout.actions}
    key = stage_key("label", STAGE_VERSION, sections, inputs)
    outputs = {
        f"label/{key[:16]}/candidate_pool": CANDIDATE_POOL_SCHEMA,
        f"label/{key[:16]}/trajectories": TRAJECTORIES_SCHEMA,
    }
    return Unit("label", key, outputs, cfg.section("rewards"), inputs)


@unit_task("label-trajectories", label_unit)
def label_trajectories(cfg: RunConfig, synthesis: Synthesis) -> Labels:
    """Composite rewards, returns and advantages for every selected step."""
    store = store_for(cfg)

    def compute():
        questions = rows(store, [synthesis.plan.questions], QUESTIONS_SCHEMA)
        selected = rows(store, list(synthesis.selected), SELECTED_SCHEMA)
        finals = rows(store, [synthesis.final_answers], FINAL_SCHEMA)
        candidates = rows(store, [s.candidates for s in synthesis.shards], CANDIDATES_SCHEMA)
        scores = rows(store, [s.scores for s in synthesis.shards], SCORES_SCHEMA)
        trajectories = label(cfg, questions, selected, finals)
        get_run_logger().info(
            "labelled %d steps of %d questions (%d step rows correct)",
            trajectories.num_rows,
            len({r["question_id"] for r in selected}),
            sum(trajectories.column("correct").to_pylist()),
        )
        return [candidate_pool(cfg, questions, selected, candidates, scores), trajectories]

    return cached_unit(store, label_unit(cfg, synthesis), compute, lambda r: Labels(*r))
