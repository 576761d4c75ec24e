"""Question sources: the bundled sample, a local/fsspec file, or a hub dataset.

A source yields raw records in MMLU-Pro's schema, each tagged with where it came from ("line 7",
"row 12") so that every later error or rejection can point at it. Structural problems — a
broken JSON line, a column of the wrong type, an empty file — are fatal (``SourceError``) and
name the file, the line or row, and the column; row-level problems are the validator's job.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from spark_core.artifacts import canonical_hash
from spark_core.config import DataConfig, default_of

BUNDLED = "bundled"
HUB_SPLIT: str = default_of(DataConfig, "hub_split")  # where a caller names no split
BUNDLED_FILE = "mmlu_pro_sample.jsonl"

# MMLU-Pro's columns and the Python types their values must have.
FIELD_TYPES: dict[str, type] = {
    "question_id": int,
    "question": str,
    "options": list,
    "answer": str,
    "answer_index": int,
    "cot_content": str,
    "category": str,
    "src": str,
}


class SourceError(ValueError):
    """A source that cannot be read at all; the message says where and why."""


@dataclass(frozen=True)
class RawRecord:
    location: str  # "line 7" (JSONL), "row 12" (Parquet/JSON/hub, 0-based)
    data: dict[str, Any]


def bundled_path() -> str:
    return str(resources.files("spark_core") / "data" / BUNDLED_FILE)


def source_kind(source: str) -> str:
    """'bundled', 'file' or 'hub' — decided from the string, with a clear error otherwise."""
    if source == BUNDLED:
        return BUNDLED
    lowered = source.lower()
    if lowered.endswith((".parquet", ".json", ".jsonl")):
        return "file"
    if source.count("/") == 1 and "." not in source.split("/")[0] and ":" not in source:
        return "hub"
    raise SourceError(
        f"data.source {source!r}: expected 'bundled', a .parquet/.json/.jsonl file, "
        "or a hub dataset id such as 'TIGER-Lab/MMLU-Pro'"
    )


def source_hash(source: str, hub_split: str = HUB_SPLIT, hub_revision: str | None = None) -> str:
    """Content hash of a source, so a cache keys on what the data *is*, never on a path."""
    kind = source_kind(source)
    if kind == "hub":
        return canonical_hash({"hub": source, "split": hub_split, "revision": hub_revision})
    path = bundled_path() if kind == BUNDLED else source
    try:
        with fsspec.open(path, "rb") as fh:
            return hashlib.sha256(fh.read()).hexdigest()
    except FileNotFoundError:
        raise SourceError(f"{path}: file not found") from None


def _check_value(path: str, location: str, column: str, value: Any) -> None:
    if value is None or column not in FIELD_TYPES:
        return
    expected = FIELD_TYPES[column]
    ok = isinstance(value, expected) and not (expected is int and isinstance(value, bool))
    if ok and column == "options":
        ok = all(isinstance(o, str) or o is None for o in value)
    if not ok:
        want = "a list of strings" if column == "options" else expected.__name__
        raise SourceError(
            f"{path}: {location}, column {column!r}: expected {want}, got "
            f"{type(value).__name__} {value!r:.80}"
        )


def _records_from_rows(path: str, rows: list[Any], label: str) -> list[RawRecord]:
    records = []
    for i, row in enumerate(rows):
        location = f"{label} {i}"
        if not isinstance(row, dict):
            raise SourceError(f"{path}: {location}: expected an object, got {type(row).__name__}")
        for column, value in row.items():
            _check_value(path, location, column, value)
        records.append(RawRecord(location, row))
    return records


def _loads(path: str, text: str, location: str | None = None) -> Any:
    """``json.loads`` whose error names the file and line (``location``: a JSONL line's)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        where = location or f"line {exc.lineno}"
        raise SourceError(
            f"{path}: {where}: not valid JSON ({exc.msg}, column {exc.colno})"
        ) from None


def _read_jsonl(path: str, text: str) -> list[RawRecord]:
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        location = f"line {number}"
        row = _loads(path, line, location)
        if not isinstance(row, dict):
            raise SourceError(
                f"{path}: {location}: expected a JSON object, got {type(row).__name__}"
            )
        for column, value in row.items():
            _check_value(path, location, column, value)
        records.append(RawRecord(location, row))
    return records


def _arrow_records(path: str, table: pa.Table) -> list[RawRecord]:
    """Check column types on the Arrow schema (fast), then hand out rows."""
    arrow_ok = {
        int: pa.types.is_integer,
        str: lambda t: pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_null(t),
        list: lambda t: (
            (pa.types.is_list(t) or pa.types.is_large_list(t))
            and (pa.types.is_string(t.value_type) or pa.types.is_large_string(t.value_type))
        ),
    }
    for column, expected in FIELD_TYPES.items():
        if column not in table.column_names:
            continue
        arrow_type = table.schema.field(column).type
        if not arrow_ok[expected](arrow_type):
            values = table.column(column).to_pylist()
            first = next((i for i, v in enumerate(values) if v is not None), 0)
            want = "list<string>" if expected is list else {int: "integer", str: "string"}[expected]
            raise SourceError(
                f"{path}: row {first}, column {column!r}: column has type {arrow_type}, "
                f"expected {want} (value {values[first] if values else None!r:.80})"
            )
    return [RawRecord(f"row {i}", row) for i, row in enumerate(table.to_pylist())]


def read_file(path: str) -> list[RawRecord]:
    """Read a Parquet, JSON (a list of objects) or JSONL file in MMLU-Pro's schema."""
    try:
        with fsspec.open(path, "rb") as fh:
            blob = fh.read()
    except FileNotFoundError:
        raise SourceError(f"{path}: file not found") from None
    if not blob.strip():
        raise SourceError(f"{path}: file is empty")
    lowered = path.lower()
    if lowered.endswith(".parquet"):
        try:
            table = pq.read_table(pa.BufferReader(blob))
        except pa.ArrowInvalid as exc:
            raise SourceError(f"{path}: not a readable Parquet file ({exc})") from None
        if table.num_rows == 0:
            raise SourceError(f"{path}: file has no rows")
        return _arrow_records(path, table)
    text = blob.decode("utf-8", errors="strict")
    if lowered.endswith(".jsonl"):
        records = _read_jsonl(path, text)
    else:
        rows = _loads(path, text)
        if isinstance(rows, dict) and isinstance(rows.get("data"), list):
            rows = rows["data"]
        if not isinstance(rows, list):
            raise SourceError(f"{path}: expected a JSON list of question objects")
        records = _records_from_rows(path, rows, "row")
    if not records:
        raise SourceError(f"{path}: file has no rows")
    return records


def read_hub(
    dataset_id: str, split: str = HUB_SPLIT, revision: str | None = None
) -> list[RawRecord]:
    """Load a hub dataset with ``datasets`` (needs network or a warm local hub cache)."""
    import datasets  # heavy import, only needed for the hub

    try:
        ds = datasets.load_dataset(dataset_id, split=split, revision=revision)
    except Exception as exc:  # datasets raises many types; name the source either way
        raise SourceError(f"hub dataset {dataset_id!r} (split {split!r}): {exc}") from exc
    return _arrow_records(f"hub:{dataset_id}", ds.data.table)


def read_source(
    source: str, hub_split: str = HUB_SPLIT, hub_revision: str | None = None
) -> list[RawRecord]:
    kind = source_kind(source)
    if kind == BUNDLED:
        return read_file(bundled_path())
    if kind == "file":
        return read_file(source)
    return read_hub(source, hub_split, hub_revision)
