"""The ingest flow under Prefect's own test harness."""

import json

import pytest
from prefect import flow

from spark_core.artifacts import ArtifactStore
from spark_core.data.sources import SourceError, bundled_path
from tasks.ingest import ingest_questions
from tasks.results import Questions

pytestmark = pytest.mark.usefixtures("prefect_harness")


@flow
def probe(cfg) -> tuple[str, Questions]:
    """Run the ingest task and report its final state name (Completed / Cached)."""
    state = ingest_questions(cfg, return_state=True)
    return state.name, state.result()


def test_second_run_is_a_cache_hit_and_new_content_reruns(run_config, tmp_path):
    source = tmp_path / "questions.jsonl"
    lines = open(bundled_path()).read().splitlines()
    source.write_text("\n".join(lines[:30]) + "\n")
    cfg = run_config(f"data.source={source}", "data.eval_fraction=0.5")

    first_state, first = probe(cfg)
    assert first_state == "Completed"
    assert first.questions.rows == 30
    second_state, second = probe(cfg)
    assert second_state == "Cached"
    assert second == first

    source.write_text("\n".join(lines[:40]) + "\n")  # same path, new contents
    third_state, third = probe(cfg)
    assert third_state == "Completed"
    assert third.questions.rows == 40
    assert third.questions.uri != first.questions.uri

    store = ArtifactStore(cfg.runtime.artifacts_url())
    meta = store.metadata(third.questions.name)
    assert meta["stage"] == "ingest" and meta["config"]["eval_fraction"] == 0.5


def test_deleted_outputs_are_recomputed_not_served_stale(run_config):
    cfg = run_config("data.per_category=2")
    _, first = probe(cfg)
    store = ArtifactStore(cfg.runtime.artifacts_url())
    store.fs.rm(store.fs_path(first.questions.name + ".parquet"))
    state, again = probe(cfg)
    assert state == "Completed"
    assert store.exists(again.questions.name) and again == first


def test_malformed_source_fails_clearly_and_writes_nothing(run_config, tmp_path):
    from flows.ingest import ingest

    source = tmp_path / "broken.jsonl"
    source.write_text(json.dumps({"question_id": 1}) + "\n{not json\n")
    cfg = run_config(f"data.source={source}")
    with pytest.raises(SourceError, match=r"broken\.jsonl: line 2"):
        ingest(cfg)
    store = ArtifactStore(cfg.runtime.artifacts_url())
    assert store.fs.find(store.fs_path("")) == []


def test_the_stage_flow_records_its_peak_memory_on_its_run_page(run_config):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows.ingest import ingest
    from tasks.memory import LAST

    LAST.pop("ingest", None)
    cfg = run_config("runtime.run_name=memory-probe")
    state = ingest(cfg, return_state=True)
    assert state.is_completed()
    assert LAST["ingest"].rss_mb > 50  # a Python process with pyarrow and Prefect loaded
    with get_client(sync_client=True) as client:
        (artifact,) = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=["ingest-memory-probe-memory"])
            )
        )
    assert artifact.flow_run_id == state.state_details.flow_run_id
    (row,) = json.loads(artifact.data)
    assert row["stage"] == "ingest" and row["peak_rss_mb"] == round(LAST["ingest"].rss_mb, 1)
