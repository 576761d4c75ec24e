"""Common-state entropy: each policy's tool-selection entropy on the shared step-1 states
(common_schema.py), over the m actions training offered (``answer`` left out, the rest
renormalised). Pooled over training seeds with a hierarchical bootstrap CI, and per seed."""

from __future__ import annotations

import math
from typing import Any

import pyarrow as pa

from spark_core.evaluation.seeds import (
    UNTRAINED,
    Groups,
    flatten,
    hierarchical_bootstrap,
    seed_groups,
    seed_label,
)
from spark_core.evaluation.stats import BOOTSTRAP_SAMPLES, without_answer
from spark_core.metrics import entropy_bits

_F = pa.float64()
COMMON_ENTROPY_SCHEMA = pa.schema(
    [
        pa.field("policy", pa.string(), nullable=False),
        pa.field("seed", pa.int64(), nullable=False),  # -1: pooled over seeds / untrained
        pa.field("questions", pa.int64(), nullable=False),  # states (one per question)
        pa.field("entropy_bits", _F, nullable=False),  # mean over states; NaN: none
        pa.field("ci_low", _F, nullable=False),
        pa.field("ci_high", _F, nullable=False),
        pa.field("normalized_entropy", _F, nullable=False),  # / log2 m
    ]
)


def state_entropy(row: dict[str, Any]) -> float:
    """Entropy (bits) of one common state's P(action | state) without ``answer``; NaN when
    all the mass is on ``answer``."""
    p = without_answer(row["probs"], row["action_names"])
    return entropy_bits(p) if p else float("nan")


def mean_entropy(values: list[float]) -> float:
    """Mean of the states' entropies, NaN ones (all mass on ``answer``) left out."""
    kept = [v for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else float("nan")


def common_groups(common: list[dict[str, Any]]) -> dict[str, Groups]:
    """policy -> {seed: {question_id: the state's entropy}}, policies in order."""
    policies = dict.fromkeys(r["policy"] for r in common)
    return {
        p: seed_groups([r for r in common if r["policy"] == p], state_entropy) for p in policies
    }


def _row(policy: str, seed: int, groups: Groups, m: int, samples: int, rng_seed: int) -> dict:
    bits = mean_entropy(flatten(groups))
    lo, hi = hierarchical_bootstrap(groups, mean_entropy, samples, rng_seed)
    return {
        "policy": policy,
        "seed": seed,
        "questions": len(flatten(groups)) // max(1, len(groups)),
        "entropy_bits": bits,
        "ci_low": lo,
        "ci_high": hi,
        "normalized_entropy": bits / math.log2(m) if m > 1 else float("nan"),
    }


def common_entropy(
    common: list[dict[str, Any]], samples: int = BOOTSTRAP_SAMPLES, seed: int = 0
) -> pa.Table:
    """Per policy: the seeds pooled (seed -1) and, for a policy with several, each seed."""
    out = []
    for policy, groups in common_groups(common).items():
        names = next(r["action_names"] for r in common if r["policy"] == policy)
        m = sum(n != "answer" for n in names)
        out.append(_row(policy, UNTRAINED, groups, m, samples, seed))
        for s, units in groups.items() if len(groups) > 1 else []:
            out.append(_row(policy, s, {s: units}, m, samples, seed))
    return pa.Table.from_pylist(out, schema=COMMON_ENTROPY_SCHEMA)


def common_lines(table: pa.Table) -> list[str]:
    """The report's common-state section (placed after the overall table)."""
    lines = [
        "",
        "## Common-state entropy",
        "",
        "Tool-selection entropy of P(action | state) without `answer` on the same states for "
        "every policy: the step-1 state (the prompt) of every held-out question. The overall "
        "table's per-state figures score each policy on its own trajectories; this one "
        "compares the policies on identical states. Trained policies pool their seeds (95% CI "
        "from a bootstrap over seeds and questions).",
        "",
        "| policy | states | H, bits (95% CI) | H / log2 m |",
        "|---|---|---|---|",
    ]
    for r in table.to_pylist():
        bits = (
            "–"
            if math.isnan(r["entropy_bits"])
            else f"{r['entropy_bits']:.3f} ({r['ci_low']:.3f}–{r['ci_high']:.3f})"
        )
        norm = "–" if math.isnan(r["normalized_entropy"]) else f"{r['normalized_entropy']:.2f}"
        lines.append(
            f"| {seed_label(r['policy'], r['seed'])} | {r['questions']} | {bits} | {norm} |"
        )
    return lines
