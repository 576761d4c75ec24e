"""A stage's tasks run unchanged under Prefect's Dask task runner (a local cluster)."""

from __future__ import annotations

import pytest

from spark_core.artifacts import ArtifactStore
from spark_core.synthesis.barrier import SELECTED_SCHEMA
from spark_core.synthesis.rollout import CANDIDATES_SCHEMA

pytestmark = pytest.mark.e2e  # a local Dask cluster


@pytest.mark.usefixtures("prefect_harness")
def test_synthesis_shards_run_in_dask_worker_processes(tiny_model_dir, tmp_path):
    from flows.synthesize import synthesize
    from spark_core.config import load_config
    from tasks.synthesize import PHASE_SECONDS

    cfg = load_config(
        "configs/demo.yaml",
        [
            f"runtime.runs_dir={tmp_path}",
            f"generator.name={tiny_model_dir}",
            f"judge.name={tiny_model_dir}",
            "data.categories=[math,physics,law,history]",
            "rollout.steps=1",
            "rollout.shards=2",
            "rollout.thought_tokens=8",
            "rollout.input_tokens=6",
            "runtime.task_runner=dask",
            "runtime.max_workers=2",
        ],
    )
    before = dict(PHASE_SECONDS)
    state = synthesize(cfg, return_state=True)
    assert state.is_completed(), state.message
    result = state.result()

    store = ArtifactStore(cfg.runtime.artifacts_url())
    shards = result.shards
    assert len(shards) == 2
    candidates = [
        r for s in shards for r in store.read(s.candidates.name, CANDIDATES_SCHEMA).to_pylist()
    ]
    assert len(candidates) == 4 * len(cfg.rollout.actions)
    assert {r["question_id"] for r in candidates} == set(result.plan.shards[0]) | set(
        result.plan.shards[1]
    )
    selected = store.read(result.selected[0].name, SELECTED_SCHEMA).to_pylist()
    assert sorted(r["question_id"] for r in selected) == sorted(
        {r["question_id"] for r in candidates}
    )
    # the shards were generated, executed and judged in the Dask workers, not in this process
    assert dict(PHASE_SECONDS) == before
