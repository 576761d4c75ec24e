import uuid

import pyarrow as pa
import pytest

from spark_core import __version__
from spark_core.artifacts import ArtifactError, ArtifactStore, canonical_hash, stage_key

SCHEMA = pa.schema([pa.field("id", pa.int64(), nullable=False), pa.field("text", pa.string())])


def table(n=3):
    return pa.table({"id": list(range(n)), "text": [f"row {i}" for i in range(n)]})


@pytest.fixture(params=["local", "memory"])
def store(request, tmp_path):
    if request.param == "local":
        return ArtifactStore(str(tmp_path / "artifacts"))
    return ArtifactStore(f"memory://spark-test-{uuid.uuid4().hex}")


def test_roundtrip_with_provenance(store):
    ref = store.write(
        "ingest/abc/things",
        table(),
        SCHEMA,
        stage="ingest",
        config={"seed": 1},
        inputs={"source": "f00"},
    )
    assert ref.rows == 3 and ref.uri.endswith("ingest/abc/things.parquet")
    assert store.read("ingest/abc/things", SCHEMA).equals(table().cast(SCHEMA))
    meta = store.metadata("ingest/abc/things")
    assert meta == {
        "stage": "ingest",
        "config": {"seed": 1},
        "inputs": {"source": "f00"},
        "version": __version__,
    }
    assert store.content_hash("ingest/abc/things") == ref.content_hash
    assert store.ref("ingest/abc/things") == ref


def test_same_content_same_hash_and_different_content_different_hash(store):
    a = store.write("a", table(), SCHEMA, stage="s")
    b = store.write("b", table(), SCHEMA, stage="s")
    c = store.write("c", table(4), SCHEMA, stage="s")
    assert a.content_hash == b.content_hash != c.content_hash


def test_write_rejects_a_table_that_breaks_the_schema(store):
    bad = pa.table({"id": ["x", "y"], "text": ["a", "b"]})
    with pytest.raises(ArtifactError, match="column 'id' has type string, expected int64"):
        store.write("bad", bad, SCHEMA, stage="s")
    with pytest.raises(ArtifactError, match=r"missing \['text'\]"):
        store.write("bad", pa.table({"id": [1]}), SCHEMA, stage="s")
    assert not store.exists("bad")


def test_read_validates_against_the_declared_schema(store):
    store.write("x", table(), SCHEMA, stage="s")
    other = pa.schema([pa.field("id", pa.int64()), pa.field("score", pa.float64())])
    with pytest.raises(ArtifactError, match="missing"):
        store.read("x", other)
    with pytest.raises(ArtifactError, match="not found"):
        store.read("nothing-here", SCHEMA)


def test_crash_during_write_leaves_no_partial_artifact(store, monkeypatch):
    store.write("keep", table(2), SCHEMA, stage="s")
    before = store.content_hash("keep")

    def crash(*_args, **_kwargs):
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(store.fs, "mv", crash)
    with pytest.raises(KeyboardInterrupt):
        store.write("keep", table(5), SCHEMA, stage="s")
    with pytest.raises(KeyboardInterrupt):
        store.write("fresh", table(5), SCHEMA, stage="s")
    monkeypatch.undo()
    assert store.content_hash("keep") == before  # the old artifact is intact
    assert not store.exists("fresh")
    leftovers = [p for p in store.fs.find(store.fs_path("")) if p.endswith(".tmp")]
    assert leftovers == []


def test_stage_key_depends_on_content_config_and_code_not_paths():
    base = stage_key("ingest", "1", {"seed": 0}, {"source": "aaa"})
    assert base == stage_key("ingest", "1", {"seed": 0}, {"source": "aaa"})
    assert base != stage_key("ingest", "1", {"seed": 1}, {"source": "aaa"})
    assert base != stage_key("ingest", "1", {"seed": 0}, {"source": "bbb"})
    assert base != stage_key("ingest", "2", {"seed": 0}, {"source": "aaa"})
    assert canonical_hash({"b": 1, "a": 2}) == canonical_hash({"a": 2, "b": 1})


def test_folders_round_trip_through_any_root(tmp_path):
    """Adapters and reports (folders, not Parquet) go to and come back from a remote root."""
    store = ArtifactStore("memory://spark-folders")
    local = tmp_path / "adapter"
    local.mkdir()
    (local / "adapter_config.json").write_text('{"r": 8}')
    uri = store.put_folder(local, "train/k/spark/adapter")
    assert uri == "memory://spark-folders/train/k/spark/adapter"
    assert store.fs.exists(store.fs_path("train/k/spark/adapter/adapter_config.json"))
    back = tmp_path / "back"
    store.get_folder(uri, back)
    assert (back / "adapter_config.json").read_text() == '{"r": 8}'
