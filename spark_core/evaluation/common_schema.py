"""The common-state distributions: every policy's exact P(action | state) on one shared set of
states (the step-1 state of every held-out question), so policies are compared on the same
states rather than each on its own trajectories."""

from __future__ import annotations

import pyarrow as pa

COMMON_STATES_SCHEMA = pa.schema(
    [
        pa.field("policy", pa.string(), nullable=False),
        pa.field("seed", pa.int64(), nullable=False),  # training seed; -1: untrained
        pa.field("question_id", pa.int64(), nullable=False),
        pa.field("category", pa.string(), nullable=False),
        pa.field("action_names", pa.list_(pa.string()), nullable=False),  # actions + answer
        pa.field("probs", pa.list_(pa.float64()), nullable=False),  # P(action | step-1 state)
    ]
)
