"""Artifacts on S3 through s3fs, against a real S3 API on loopback (moto's server)."""

from __future__ import annotations

import pyarrow as pa
import pytest

from spark_core.artifacts import ArtifactError, ArtifactStore
from spark_core.data.questions import QUESTIONS_SCHEMA

pytestmark = pytest.mark.e2e  # moto's S3 server
SCHEMA = pa.schema([pa.field("x", pa.int64(), nullable=False)])


@pytest.fixture(scope="module")
def s3_endpoint():
    moto_server = pytest.importorskip("moto.server")
    boto3 = pytest.importorskip("boto3")
    pytest.importorskip("s3fs")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    patch = pytest.MonkeyPatch()
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
    }.items():
        patch.setenv(key, value)
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="spark")
    yield endpoint
    patch.undo()
    server.stop()


def test_store_writes_atomically_and_reads_back_on_s3(s3_endpoint):
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    store = ArtifactStore("s3://spark/runs/a")
    ref = store.write("stage/key/table", pa.table({"x": [1, 2, 3]}), SCHEMA, stage="test")
    assert ref.uri == "s3://spark/runs/a/stage/key/table.parquet" and ref.rows == 3
    assert store.exists("stage/key/table")
    assert store.read("stage/key/table", SCHEMA).column("x").to_pylist() == [1, 2, 3]
    assert [p.rsplit("/", 1)[1] for p in store.fs.find("spark/runs/a")] == ["table.parquet"]
    again = store.write("stage/key/table", pa.table({"x": [1, 2, 3]}), SCHEMA, stage="test")
    assert again.content_hash == ref.content_hash
    with pytest.raises(ArtifactError, match="not found at s3://spark/runs/a/missing"):
        store.read("missing")


@pytest.mark.usefixtures("prefect_harness")
def test_ingest_flow_writes_its_artifacts_to_s3(s3_endpoint, run_config):
    import s3fs

    from flows.ingest import ingest

    s3fs.S3FileSystem.clear_instance_cache()
    cfg = run_config("runtime.artifacts_root=s3://spark/runs/demo", "data.per_category=1")
    refs = ingest(cfg)
    assert refs.questions.uri.startswith("s3://spark/runs/demo/ingest/")
    table = ArtifactStore("s3://spark/runs/demo").read(refs.questions.name, QUESTIONS_SCHEMA)
    assert table.num_rows == 14
    assert ingest(cfg) == refs  # a rerun finds them there
