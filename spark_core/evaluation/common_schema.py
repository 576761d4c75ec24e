"""The common-state table's schema (``common_states.py`` writes it, the report reads it)."""

from __future__ import annotations

import pyarrow as pa

COMMON_STATES_SCHEMA = pa.schema(
    [
        pa.field("policy", pa.string(), nullable=False),
        pa.field("seed", pa.int64(), nullable=False),  # the adapter's training seed; -1: none
        pa.field("question_id", pa.int64(), nullable=False),
        pa.field("category", pa.string(), nullable=False),
        pa.field("action_names", pa.list_(pa.string()), nullable=False),  # actions + answer
        pa.field("probs", pa.list_(pa.float64()), nullable=False),  # P(action | step-1 state)
    ]
)
