"""synthesize -> label under Prefect's test harness, on a tiny random model built in the test."""

from __future__ import annotations

import pytest
from prefect.client.orchestration import get_client

from flows.label import label
from flows.synthesize import synthesize
from spark_core import CATEGORIES
from spark_core.artifacts import ArtifactStore
from spark_core.labeling.trajectories import TRAJECTORIES_SCHEMA
from spark_core.protocol import parse_step
from spark_core.synthesis.barrier import SELECTED_SCHEMA
from tests.helpers import task_states

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.fixture(scope="module")
def tiny_cfg(tiny_model_dir, tmp_path_factory):
    from spark_core.config import load_config

    runs = tmp_path_factory.mktemp("runs")

    def make(*overrides: str):
        return load_config(
            "configs/demo.yaml",
            [
                f"runtime.runs_dir={runs}",
                f"generator.name={tiny_model_dir}",
                f"judge.name={tiny_model_dir}",
                "rollout.steps=2",  # the step loop, its barrier and multi-step returns
                "rollout.shards=2",  # shards in parallel, selection a barrier over both
                "rollout.thought_tokens=12",
                "rollout.input_tokens=8",
                "tools.parallelism=2",
                *overrides,
            ],
        )

    return make


def test_synthesize_and_label_cover_every_category_and_rerun_from_cache(tiny_cfg):
    cfg = tiny_cfg()
    first = synthesize(cfg, return_state=True)
    synthesis = first.result()
    refs = label(cfg, synthesis)
    store = ArtifactStore(cfg.runtime.artifacts_url())
    trajectories = store.read(refs.trajectories.name, TRAJECTORIES_SCHEMA).to_pylist()
    assert {r["category"] for r in trajectories} == set(CATEGORIES)
    assert all(1 <= r["num_steps"] <= cfg.rollout.steps for r in trajectories)
    for r in trajectories:
        assert r["reward"] == pytest.approx(r["r_quality"] + r["r_diversity"] + r["r_correct"])
        assert parse_step(r["completion"], cfg.rollout.actions).action == r["action"]
        assert r["correct"] == (r["final_answer"] == r["answer"])
    selected = [
        row
        for step in synthesis.selected
        for row in store.read(step.name, SELECTED_SCHEMA).to_pylist()
    ]
    assert len(selected) == len(trajectories)
    assert {r["action"] for r in selected} <= set(cfg.rollout.actions)

    again = synthesize(cfg, return_state=True)  # nothing changed: every unit is a cache hit
    states = task_states(again)
    assert set(states["rollout-shard"]) == {"Cached"} and set(states["select-step"]) == {"Cached"}
    assert again.result().summary == synthesis.summary

    # only the reward weights change: synthesis stays cached, labeling reruns
    reweighted = tiny_cfg("rewards.w_diversity=2.0")
    second = synthesize(reweighted, return_state=True)
    assert set(task_states(second)["rollout-shard"]) == {"Cached"}
    relabel = label(reweighted, second.result(), return_state=True)
    assert task_states(relabel)["label-trajectories"] == ["Completed"]
    with get_client(sync_client=True) as client:  # what the UI shows: the fields, by name
        shown = client.read_flow_run(relabel.state_details.flow_run_id).parameters["synthesis"]
    assert set(shown) == {"plan", "selected", "shards", "final_answers", "summary"}
    assert set(shown["shards"][0]) == {"candidates", "scores"}
    assert shown["final_answers"]["uri"] == second.result().final_answers.uri
    new = relabel.result().trajectories
    assert new.uri != refs.trajectories.uri
    rows = store.read(new.name, TRAJECTORIES_SCHEMA).to_pylist()
    assert [r["r_diversity"] for r in rows] == pytest.approx(
        [4 * r["r_diversity"] for r in trajectories]
    )
