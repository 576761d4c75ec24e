"""Training seeds in the report: a trained policy has one adapter (and one eval row per
question) per training seed. Its figures pool the seeds (a question's value is the mean over
the seeds), and its intervals come from a hierarchical bootstrap that resamples seeds, then
questions, so they carry the between-seed variance as well as the question sampling.

Units are grouped as ``{seed: {question_id: unit}}``; untrained policies have the one seed -1.
With a single seed every function here reduces to the plain bootstrap over questions
(``stats.bootstrap_stat``), draw for draw."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from spark_core.evaluation.stats import BOOTSTRAP_SAMPLES
from spark_core.evaluation.stats import percentile_interval as interval

T = TypeVar("T")
UNTRAINED = -1  # the seed of policies without a training seed (base, base@T, extra models)
Groups = dict[int, dict[int, Any]]  # seed -> question_id -> unit


def seed_of(row: dict[str, Any]) -> int:
    """A row's training seed: -1 for an untrained policy (and for rows written before seeds)."""
    return row.get("seed", UNTRAINED)


def seed_groups(rows: Sequence[dict[str, Any]], unit: Callable[[dict[str, Any]], T]) -> Groups:
    """``{seed: {question_id: unit(row)}}`` of one policy's rows, seeds and questions in the
    order they appear."""
    out: Groups = {}
    for r in rows:
        out.setdefault(seed_of(r), {})[r["question_id"]] = unit(r)
    return out


def _questions(*groups: Groups) -> list[int]:
    """The questions every seed of every group has, in the first seed's order."""
    first = next(iter(groups[0].values()), {})
    return [q for q in first if all(q in g for gr in groups for g in gr.values())]


def flatten(groups: Groups, questions: Sequence[int] | None = None) -> list:
    """Every seed's unit of each question, question by question (the pooled sample)."""
    qs = _questions(groups) if questions is None else questions
    return [g[q] for q in qs for g in groups.values()]


def _draw_seeds(groups: Groups, rng: random.Random) -> list[dict[int, Any]]:
    seeds = list(groups.values())
    return rng.choices(seeds, k=len(seeds)) if len(seeds) > 1 else seeds


def hierarchical_bootstrap(
    groups: Groups,
    statistic: Callable[[Sequence], float],
    samples: int = BOOTSTRAP_SAMPLES,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile interval of statistic(pooled units) under the two-level bootstrap: draw the
    seeds with replacement, then the questions with replacement; the sample is every drawn
    seed's unit of every drawn question."""
    questions = _questions(groups) if groups else []
    if not questions:
        return float("nan"), float("nan")
    rng = random.Random(seed)
    values = []
    for _ in range(samples):
        seeds = _draw_seeds(groups, rng)
        drawn = rng.choices(questions, k=len(questions))
        values.append(statistic([g[q] for q in drawn for g in seeds]))
    return interval(values, level)


def paired_differences(
    a: Groups,
    b: Groups,
    statistic: Callable[[Sequence], float],
    samples: int = BOOTSTRAP_SAMPLES,
    seed: int = 0,
) -> tuple[float, list[float], int]:
    """statistic(A) - statistic(B) on the questions both have: (the observed difference, its
    hierarchical bootstrap replicates, the number of questions). Each replicate draws A's
    seeds and B's seeds independently (separate training runs) and one question draw for
    both (the pairing)."""
    questions = _questions(a, b)
    if not questions:
        return float("nan"), [], 0
    observed = statistic(flatten(a, questions)) - statistic(flatten(b, questions))
    rng = random.Random(seed)
    replicates = []
    for _ in range(samples):
        seeds_a, seeds_b = _draw_seeds(a, rng), _draw_seeds(b, rng)
        drawn = rng.choices(questions, k=len(questions))
        replicates.append(
            statistic([g[q] for q in drawn for g in seeds_a])
            - statistic([g[q] for q in drawn for g in seeds_b])
        )
    return observed, [v for v in replicates if not math.isnan(v)], len(questions)


def seed_label(policy: str, seed: int) -> str:
    """How the report names a row: the policy, or "ppo (seed 1)" for one seed of several."""
    return policy if seed == UNTRAINED else f"{policy} (seed {seed})"
