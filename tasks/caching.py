"""Content-addressed caching shared by every stage task.

A stage's outputs live under ``<stage>/<key16>/`` in the artifact store, where the key hashes
the stage's input content hashes, config section and code version. Prefect's cache (keyed the
same way) makes a rerun show up as *Cached* in the UI; the key-addressed folder makes the stage
idempotent even when Prefect's own records are gone.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from prefect.context import TaskRunContext
from prefect.logging import get_run_logger

from spark_core.artifacts import ArtifactRef, ArtifactStore
from spark_core.config import RunConfig


def store_for(cfg: RunConfig) -> ArtifactStore:
    return ArtifactStore(cfg.runtime.artifacts_url())


def cache_key_from(
    key_fn: Callable[..., str], outputs: Callable[..., list[str]]
) -> Callable[[TaskRunContext, dict[str, Any]], str | None]:
    """Prefect ``cache_key_fn`` returning the stage key — unless Prefect holds a record for
    it whose artifacts were deleted since, in which case a one-off key forces a recompute
    instead of serving the stale record. (The recompute writes the same, deterministic
    artifacts back, so the original record is valid again afterwards.)"""

    def compute(ctx: TaskRunContext, params: dict[str, Any]) -> str:
        key = key_fn(**params)
        store = store_for(params["cfg"])
        names = outputs(key, **params)
        if all(store.exists(name) for name in names):
            get_run_logger().info("served from cache: %s", served(store, names))
            return key
        if ctx.result_store.exists(key):
            return f"{key}-rebuild-{uuid.uuid4().hex}"
        return key

    return compute


def existing(store: ArtifactStore, names: list[str]) -> list[ArtifactRef] | None:
    """Refs to a unit's outputs when all of them exist (the unit finished earlier)."""
    if all(store.exists(name) for name in names):
        return [store.ref(name) for name in names]
    return None


def is_local(store: ArtifactStore) -> bool:
    protocols = store.fs.protocol if isinstance(store.fs.protocol, tuple) else (store.fs.protocol,)
    return "file" in protocols


MODEL_COLUMNS = {"judge": "judge calls", "gen": "generator calls"}


def served(store: ArtifactStore, names: list[str]) -> str:
    """What a finished unit holds and did not have to redo: '126 judge calls, 36 generator
    calls, 0 paid (2 artifacts, 162 rows)'. One row with a ``<model>_prompt_tokens`` column is
    one model call (as in the stage's own log lines); served from the artifacts, none is paid."""
    calls = dict.fromkeys(MODEL_COLUMNS.values(), 0)
    rows = 0
    for name in names:
        table = store.read(name)
        rows += table.num_rows
        for prefix, label in MODEL_COLUMNS.items():
            if f"{prefix}_prompt_tokens" in table.column_names:
                calls[label] += table.num_rows
    made = [f"{n} {label}" for label, n in calls.items() if n]
    paid = ", ".join([*made, "0 paid"]) if made else "no model calls"
    return f"{paid} ({len(names)} artifacts, {rows} rows)"
