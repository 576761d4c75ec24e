"""Content-addressed caching shared by every stage task.

A stage's outputs live under ``<stage>/<key16>/`` in the artifact store, where the key hashes
the stage's input content hashes, config section and code version. Prefect's cache (keyed the
same way) makes a rerun show up as *Cached* in the UI; the key-addressed folder makes the stage
idempotent even when Prefect's own records are gone.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pyarrow as pa
from prefect import task
from prefect.context import TaskRunContext
from prefect.exceptions import MissingContextError
from prefect.logging import get_run_logger
from prefect.states import Failed, State

from spark_core.artifacts import ArtifactRef, ArtifactStore
from spark_core.config import RunConfig
from spark_core.models.stop_rules import StageStopped
from tasks.results import RESULTS_SHAPE

T = TypeVar("T")
STOPPED = "Stopped"  # the state name of a unit that stopped on purpose (resumable)


def store_for(cfg: RunConfig) -> ArtifactStore:
    """The run's artifact store (the one place a store is built from a config)."""
    return ArtifactStore(cfg.runtime.artifacts_url())


def ui_key(kind: str, cfg: RunConfig) -> str:
    """The key of a run's Prefect UI artifact of one kind: 'synthesis-demo-run'. Keys allow
    lowercase letters, digits and dashes only."""
    return f"{kind}-{cfg.runtime.run_name}".lower().replace("_", "-").replace(".", "-")


def _logger() -> logging.Logger | logging.LoggerAdapter:
    """The run's logger inside a flow or task run; a plain one outside (a notebook, a test)."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("spark.tasks")


def stopped_state(exc: StageStopped) -> State:
    """A Failed state whose message is the whole story: no traceback for a planned stop."""
    return Failed(name=STOPPED, message=str(exc))


def rows(store: ArtifactStore, refs: Sequence[ArtifactRef], schema: pa.Schema) -> list[dict]:
    """The rows of several artifacts of one schema, in order."""
    return [r for ref in refs for r in store.read(ref.name, schema).to_pylist()]


@dataclass(frozen=True)
class Unit:
    """One cached unit of work: its content key and the Parquet artifacts it writes (name ->
    schema, written in this order, so the last one's presence marks the unit complete), plus
    any other files it leaves under the root (an adapter), and the provenance its artifacts
    carry (stage, config section, input hashes)."""

    stage: str
    key: str
    outputs: dict[str, pa.Schema]
    config: Any = None
    inputs: dict[str, str] = field(default_factory=dict)
    files: tuple[str, ...] = ()
    what: str = ""  # how logs name the unit ("step 2 shard 1"); its key when empty

    @property
    def name(self) -> str:
        return f"{self.stage} {self.what or self.key[:16]}"

    def done(self, store: ArtifactStore) -> bool:
        return all(store.exists(n) for n in self.outputs) and all(
            store.has_file(f) for f in self.files
        )


def cached_unit(
    store: ArtifactStore,
    unit: Unit,
    compute: Callable[[], Sequence[pa.Table]],
    result: Callable[[list[ArtifactRef]], T],
) -> T | State:
    """Serve a unit from its artifacts when it finished earlier, otherwise run ``compute``
    (one table per output, in order) and write them with their provenance; ``result`` turns
    the refs into what the task returns. A planned stop (cost limit, failing judge) becomes
    a resumable "Stopped" state: everything finished is in the response cache."""
    if unit.done(store):
        _logger().debug("%s finished earlier; reusing it", unit.name)
        return result([store.ref(name) for name in unit.outputs])
    started = time.monotonic()
    try:
        tables = compute()
    except StageStopped as exc:
        _logger().error("%s stopped: %s", unit.name, exc)
        return stopped_state(exc)
    meta = {"stage": unit.stage, "config": unit.config, "inputs": unit.inputs}
    refs = [
        store.write(name, table, schema, **meta)
        for (name, schema), table in zip(unit.outputs.items(), tables, strict=True)
    ]
    _write_work_time(store, unit, time.monotonic() - started)
    return result(refs)


def _work_time_path(store: ArtifactStore, name: str) -> str:
    """A hidden file beside a unit's last output: how long computing the unit took."""
    folder, _, base = name.rpartition("/")
    return store.fs_path(f"{folder}/.work-{base}.json" if folder else f".work-{base}.json")


def _write_work_time(store: ArtifactStore, unit: Unit, seconds: float) -> None:
    """Record how long the unit's work took, so a later cache hit can say what it skipped.
    A side file, not an artifact: it is never hashed nor part of a key (timings vary)."""
    path = _work_time_path(store, list(unit.outputs)[-1])
    try:
        store.fs.pipe_file(path, json.dumps({"seconds": round(seconds, 1)}).encode())
    except Exception as exc:  # a summary nicety: never fail a unit over it (any filesystem)
        _logger().debug("could not record the work time of %s: %r", unit.name, exc)


def work_seconds(store: ArtifactStore, names: Sequence[str]) -> float | None:
    """The recorded work time of the unit whose outputs are ``names`` (None: not recorded)."""
    path = _work_time_path(store, names[-1])
    try:
        return float(json.loads(store.fs.cat_file(path))["seconds"])
    except (OSError, ValueError, KeyError):
        return None


def unit_task(
    name: str, unit: Callable[..., Unit], run_name: str | Callable[[], str] | None = None
) -> Callable[[Callable[..., T]], Any]:
    """``@task`` for a cached unit, its runs named for what they do (``run_name``, Prefect's
    ``task_run_name``: "rollout-step{step}-shard{shard}"). Prefect's cache key is the unit's
    content key and the shape of the result types (a rerun shows as *Cached*) — unless
    Prefect holds a record for it whose artifacts were deleted since, in which case a one-off
    key forces a recompute instead of serving the stale record. (The recompute writes the
    same, deterministic artifacts back.) ``unit`` takes the task's parameters."""

    def cache_key(ctx: TaskRunContext, params: dict[str, Any]) -> str:
        spec = unit(**params)
        key = f"{spec.key}-{RESULTS_SHAPE}"  # a record of older result types is not served
        store = store_for(params["cfg"])
        if spec.done(store):
            get_run_logger().info("served from cache: %s", served(store, list(spec.outputs)))
            return key
        if ctx.result_store.exists(key):
            return f"{key}-rebuild-{uuid.uuid4().hex}"
        return key

    return task(
        name=name, task_run_name=run_name or name, cache_key_fn=cache_key, persist_result=True
    )


MODEL_COLUMNS = {"judge": "judge calls", "gen": "generator calls"}


def served(store: ArtifactStore, names: list[str]) -> str:
    """What a finished unit holds and did not have to redo, in its stage's terms: '126 judge
    calls, 36 generator calls, 0 paid (2 artifacts, 162 rows)', 'sft adapter: 12 training
    steps (final loss 0.41) not rerun, no model calls; 87.2 s of work skipped (...)'. One row
    with a ``<model>_prompt_tokens`` column is one model call (as in the stage's own log
    lines), a ``calls`` column counts an evaluated policy's calls; served from the
    artifacts, none is paid."""
    calls = dict.fromkeys(MODEL_COLUMNS.values(), 0)
    rows, skipped = 0, []
    for name in names:
        table = store.read(name)
        rows += table.num_rows
        columns = set(table.column_names)
        for prefix, label in MODEL_COLUMNS.items():
            if f"{prefix}_prompt_tokens" in columns:
                calls[label] += table.num_rows
        if {"model", "calls"} <= columns:  # an evaluated policy's model calls
            calls["generator calls"] += sum(table.column("calls").to_pylist())
        if table.num_rows and {"trainer", "step", "loss"} <= columns:  # a trained adapter
            last = table.to_pylist()[-1]
            loss = "" if last["loss"] is None else f" (final loss {last['loss']:.3g})"
            skipped.append(f"{last['trainer']} adapter: {last['step']} training steps{loss}")
        if table.num_rows and {"policy", "question_id", "correct"} <= columns:  # evaluated
            policy = table.column("policy")[0].as_py()
            skipped.append(f"{policy} rolled out on {table.num_rows} eval questions")
    made = [f"{n} {label}" for label, n in calls.items() if n]
    paid = ", ".join([*made, "0 paid"]) if made else "no model calls"
    what = f"{'; '.join(skipped)} not rerun, {paid}" if skipped else paid
    seconds = work_seconds(store, names)
    took = f"; {seconds:.1f} s of work skipped" if seconds is not None else ""
    return f"{what}{took} ({len(names)} artifacts, {rows} rows)"
