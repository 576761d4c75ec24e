"""cached_unit: a finished unit is served from its artifacts; a missing output recomputes."""

from __future__ import annotations

import pyarrow as pa

from spark_core.artifacts import ArtifactStore
from spark_core.models.stop_rules import StageStopped
from tasks.caching import STOPPED, Unit, cached_unit

SCHEMA = pa.schema([pa.field("x", pa.int64(), nullable=False)])


def test_a_finished_unit_is_served_and_a_missing_output_recomputes(tmp_path):
    store = ArtifactStore(str(tmp_path / "artifacts"))
    unit = Unit(
        "test",
        "k" * 64,
        {"test/a": SCHEMA, "test/b": SCHEMA},
        config={"n": 3},
        inputs={"source": "h"},
        files=("test/extra/done.json",),
    )
    calls = []

    def compute():
        calls.append(1)
        (tmp_path / "artifacts" / "test" / "extra").mkdir(parents=True, exist_ok=True)
        (tmp_path / "artifacts" / "test" / "extra" / "done.json").write_text("{}")
        return [pa.table({"x": [1, 2, 3]}), pa.table({"x": [4]})]

    first = cached_unit(store, unit, compute, list)
    assert len(calls) == 1 and [r.rows for r in first] == [3, 1]
    assert store.metadata("test/a")["config"] == {"n": 3}
    assert store.metadata("test/b")["inputs"] == {"source": "h"}

    assert cached_unit(store, unit, compute, list) == first  # same key: not recomputed
    assert len(calls) == 1

    store.fs.rm(store.fs_path("test/a.parquet"))  # an output went missing: recompute
    again = cached_unit(store, unit, compute, list)
    assert len(calls) == 2 and again == first  # deterministic: the same refs and hashes

    (tmp_path / "artifacts" / "test" / "extra" / "done.json").unlink()  # a non-Parquet output
    cached_unit(store, unit, compute, list)
    assert len(calls) == 3


def test_a_planned_stop_is_a_resumable_state_and_writes_nothing(tmp_path):
    store = ArtifactStore(str(tmp_path))
    unit = Unit("test", "s" * 64, {"test/out": SCHEMA})

    def compute():
        raise StageStopped("judge cost limit reached")

    state = cached_unit(store, unit, compute, list)
    assert state.is_failed() and state.name == STOPPED
    assert state.message == "judge cost limit reached"
    assert not store.exists("test/out")
