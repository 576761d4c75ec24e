"""Parquet artifact store: the only way stages talk to each other.

Every artifact is written through a declared pyarrow schema, atomically (a hidden temporary
file, then a rename, so a reader never sees half a file), and carries file-level metadata that
traces it back to what made it: the stage, the config section, the content hashes of its inputs
and the package version. The root is any fsspec URL (a local folder by default, ``memory://``
in tests, ``s3://`` at scale).
"""

from __future__ import annotations

import hashlib
import io
import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from spark_core import __version__

METADATA_KEY = b"spark"


class ArtifactError(RuntimeError):
    """An artifact that is missing or does not match its declared schema."""


@dataclass(frozen=True)
class ArtifactRef:
    """What a stage hands downstream: where an artifact is and what it contains."""

    name: str
    uri: str
    content_hash: str
    rows: int


def canonical_hash(obj: Any) -> str:
    """A stable sha256 of any JSON-able object (sorted keys), used for cache keys."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Cast ``table`` to ``schema`` (same columns, in order), or say which column is wrong."""
    missing = [f.name for f in schema if f.name not in table.column_names]
    extra = [n for n in table.column_names if n not in schema.names]
    if missing or extra:
        raise ArtifactError(
            f"columns do not match the schema: missing {missing}, unexpected {extra}"
        )
    table = table.select(schema.names)
    try:
        return table.cast(schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
        for field in schema:
            actual = table.schema.field(field.name).type
            if actual != field.type:
                raise ArtifactError(
                    f"column {field.name!r} has type {actual}, expected {field.type}: {exc}"
                ) from exc
        raise ArtifactError(str(exc)) from exc


class ArtifactStore:
    """A folder (any fsspec URL) of named Parquet artifacts."""

    def __init__(self, root: str):
        self.root = root.rstrip("/")
        self.fs, self._base = fsspec.core.url_to_fs(self.root)
        self.fs.makedirs(self._base, exist_ok=True)

    def _path(self, name: str) -> str:
        return f"{self._base}/{name}.parquet"

    def uri(self, name: str) -> str:
        return f"{self.root}/{name}.parquet"

    def exists(self, name: str) -> bool:
        return self.fs.exists(self._path(name))

    def fs_path(self, relative: str) -> str:
        """A path under the root as ``self.fs`` names it (a local path for a local root): for
        the files that are not Parquet artifacts, such as adapters and reports."""
        return f"{self._base}/{relative}" if relative else self._base

    @property
    def is_local(self) -> bool:
        """Whether the root is a local folder (training and reports then write into it)."""
        protocols = self.fs.protocol
        return "file" in (protocols if isinstance(protocols, tuple) else (protocols,))

    def has_file(self, relative: str) -> bool:
        """Whether a file that is not a Parquet artifact (an adapter's config) exists."""
        return self.fs.exists(self.fs_path(relative))

    def folder_uri(self, relative: str) -> str:
        """The URI of a folder under the root (an adapter, a report)."""
        return f"{self.root}/{relative}"

    def get_folder(self, uri: str, target: str | Path) -> None:
        """Copy a folder under this root (given by its URI) to a local ``target``: adapters
        trained on another machine, read back where they are evaluated."""
        relative = uri[len(self.root) :].lstrip("/")
        self.fs.get(self.fs_path(relative), str(target), recursive=True)

    def put_folder(self, local: str | Path, relative: str) -> str:
        """Copy a local folder (a report) under this root; returns its URI."""
        self.fs.put(str(local), self.fs_path(relative), recursive=True)
        return self.folder_uri(relative)

    def write(
        self,
        name: str,
        table: pa.Table,
        schema: pa.Schema,
        *,
        stage: str,
        config: dict[str, Any] | None = None,
        inputs: dict[str, str] | None = None,
    ) -> ArtifactRef:
        """Validate ``table`` against ``schema`` and write it atomically with provenance."""
        try:
            table = conform(table, schema)
        except ArtifactError as exc:
            raise ArtifactError(f"artifact {name!r}: {exc}") from None
        provenance = {
            "stage": stage,
            "config": config or {},
            "inputs": dict(sorted((inputs or {}).items())),
            "version": __version__,
        }
        meta = dict(schema.metadata or {})
        meta[METADATA_KEY] = json.dumps(provenance, sort_keys=True).encode()
        table = table.replace_schema_metadata(meta)

        buffer = io.BytesIO()
        pq.write_table(table, buffer, compression="zstd")
        blob = buffer.getvalue()
        final = self._path(name)
        parent = final.rsplit("/", 1)[0]
        self.fs.makedirs(parent, exist_ok=True)
        temp = f"{parent}/.{final.rsplit('/', 1)[1]}.{uuid.uuid4().hex}.tmp"
        try:
            with self.fs.open(temp, "wb") as fh:
                fh.write(blob)
            self.fs.mv(temp, final)
        finally:
            if self.fs.exists(temp):
                self.fs.rm(temp)
        return ArtifactRef(name, self.uri(name), hashlib.sha256(blob).hexdigest(), table.num_rows)

    def read(self, name: str, schema: pa.Schema | None = None) -> pa.Table:
        """Read an artifact, checking it against its declared schema when one is given."""
        path = self._path(name)
        if not self.fs.exists(path):
            raise ArtifactError(f"artifact {name!r} not found at {self.uri(name)}")
        with self.fs.open(path, "rb") as fh:
            table = pq.read_table(fh)
        if schema is not None:
            try:
                table = conform(table, schema)
            except ArtifactError as exc:
                raise ArtifactError(f"artifact {self.uri(name)}: {exc}") from None
        return table

    def metadata(self, name: str) -> dict[str, Any]:
        """The provenance written with the artifact."""
        with self.fs.open(self._path(name), "rb") as fh:
            meta = pq.read_schema(fh).metadata or {}
        if METADATA_KEY not in meta:
            raise ArtifactError(f"artifact {self.uri(name)} carries no spark metadata")
        return json.loads(meta[METADATA_KEY])

    def content_hash(self, name: str) -> str:
        """sha256 of the artifact's bytes: what downstream cache keys are built from."""
        with self.fs.open(self._path(name), "rb") as fh:
            return hashlib.sha256(fh.read()).hexdigest()

    def ref(self, name: str) -> ArtifactRef:
        path = self._path(name)
        if not self.fs.exists(path):
            raise ArtifactError(f"artifact {name!r} not found at {self.uri(name)}")
        with self.fs.open(path, "rb") as fh:
            rows = pq.ParquetFile(fh).metadata.num_rows
        return ArtifactRef(name, self.uri(name), self.content_hash(name), rows)


def stage_key(
    stage: str, stage_version: str, config: dict[str, Any], inputs: dict[str, str]
) -> str:
    """A stage's cache key: its inputs' content hashes, its config section and its version
    (the stage's ``STAGE_VERSION``, bumped when its logic changes what it writes, and the
    package's) — never a file path, so moving a run folder or renaming a file changes nothing."""
    return canonical_hash(
        {
            "stage": stage,
            "code": f"{stage_version}/{__version__}",
            "config": config,
            "inputs": inputs,
        }
    )
