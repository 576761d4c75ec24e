"""How many model calls an evaluated policy made: one row per policy, written beside its
rollout rows so the pipeline summary counts evaluate's calls as it counts synthesis's, and a
cache hit can say what it did not repeat. Only the call count is kept: cache hits and
tokens depend on what an earlier run left in the response cache, and artifacts are
deterministic."""

from __future__ import annotations

import pyarrow as pa

from spark_core.models.usage import Usage

CALLS_SCHEMA = pa.schema(
    [
        pa.field("policy", pa.string(), nullable=False),
        pa.field("model", pa.string(), nullable=False),
        pa.field("calls", pa.int64(), nullable=False),
    ]
)


def calls_table(policy: str, usage: Usage) -> pa.Table:
    return pa.Table.from_pylist(
        [{"policy": policy, "model": usage.model, "calls": usage.calls}], schema=CALLS_SCHEMA
    )
