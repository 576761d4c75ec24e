"""Evaluation summary tables (per policy x category, pooled over training seeds, plus one
overall row per seed), action usage, the paired tests, and the report's HTML. The Markdown is
in report_text.py, the claims in claims.py."""

from __future__ import annotations

import base64
import math
import re
from collections import Counter
from itertools import combinations
from pathlib import Path
from typing import Any

import pyarrow as pa

from spark_core.evaluation.policies import TESTED
from spark_core.evaluation.seeds import (
    UNTRAINED,
    flatten,
    hierarchical_bootstrap,
    seed_groups,
    seed_of,
)
from spark_core.evaluation.stats import (
    BOOTSTRAP_SAMPLES,
    accuracy,
    mcnemar_exact,
    paired_permutation_test,
    pooled_entropy,
    pooled_mean,
    state_entropies,
    tool_state_entropies,
)
from spark_core.protocol import ANSWER, INVALID
from spark_core.str_enum import StrEnum

OVERALL = "overall"
_F = pa.float64()
SUMMARY_SCHEMA = pa.schema(
    [
        pa.field("policy", pa.string(), nullable=False),
        pa.field("seed", pa.int64(), nullable=False),  # -1: pooled over seeds / untrained
        pa.field("category", pa.string(), nullable=False),
        pa.field("n", pa.int64(), nullable=False),  # questions
        pa.field("accuracy", _F, nullable=False),
        pa.field("ci_low", _F, nullable=False),
        pa.field("ci_high", _F, nullable=False),
        pa.field("answered_accuracy", _F, nullable=False),  # NaN: nothing answered
        pa.field("no_answer_rate", _F, nullable=False),
        pa.field("invalid_rate", _F, nullable=False),
        pa.field("mean_steps", _F, nullable=False),
        pa.field("tool_error_rate", _F, nullable=False),
        pa.field("state_entropy_bits", _F, nullable=False),  # NaN: no distributions (free)
        pa.field("state_entropy_ci_low", _F, nullable=False),
        pa.field("state_entropy_ci_high", _F, nullable=False),
        pa.field("state_normalized_entropy", _F, nullable=False),
        # per-state entropy over the m actions synthesis offers: `answer` out, renormalised
        pa.field("tool_state_entropy_bits", _F, nullable=False),
        pa.field("tool_state_entropy_ci_low", _F, nullable=False),
        pa.field("tool_state_entropy_ci_high", _F, nullable=False),
        pa.field("tool_state_normalized_entropy", _F, nullable=False),  # / log2 m
        pa.field("entropy_bits", _F, nullable=False),  # pooled chosen actions
        pa.field("entropy_ci_low", _F, nullable=False),
        pa.field("entropy_ci_high", _F, nullable=False),
        pa.field("normalized_entropy", _F, nullable=False),
    ]
)
USAGE_SCHEMA = pa.schema(
    [
        pa.field("policy", pa.string(), nullable=False),
        pa.field("action", pa.string(), nullable=False),
        pa.field("count", pa.int64(), nullable=False),
        pa.field("share", _F, nullable=False),
    ]
)
PAIRS_SCHEMA = pa.schema(
    [
        pa.field("policy_a", pa.string(), nullable=False),
        pa.field("policy_b", pa.string(), nullable=False),
        pa.field("seed_a", pa.int64(), nullable=False),  # -1: untrained or its only seed
        pa.field("seed_b", pa.int64(), nullable=False),
        pa.field("accuracy_a", _F, nullable=False),
        pa.field("accuracy_b", _F, nullable=False),
        pa.field("only_a_correct", pa.int64(), nullable=False),
        pa.field("only_b_correct", pa.int64(), nullable=False),
        pa.field("discordant_with_guess", pa.int64(), nullable=False),
        pa.field("p_value", _F, nullable=False),
    ]
)
ENTROPY_TESTS_SCHEMA = pa.schema(
    [
        pa.field("policy_a", pa.string(), nullable=False),
        pa.field("policy_b", pa.string(), nullable=False),
        pa.field("seed_a", pa.int64(), nullable=False),  # -1: untrained or its only seed
        pa.field("seed_b", pa.int64(), nullable=False),
        pa.field("figure", pa.string(), nullable=False),  # EntropyFigure
        pa.field("n_questions", pa.int64(), nullable=False),
        pa.field("entropy_a", _F, nullable=False),
        pa.field("entropy_b", _F, nullable=False),
        pa.field("difference", _F, nullable=False),
        pa.field("p_value", _F, nullable=False),
    ]
)


class EntropyFigure(StrEnum):
    """The tool-selection entropy figures: the ``figure`` column of ``eval_entropy_tests``."""

    PER_STATE = "per-state"  # mean entropy of P(action | state) over the states
    PER_STATE_TOOLS = "per-state tools"  # the same over the m actions training offered
    POOLED = "pooled"  # entropy of the pooled counts of the tools and cot taken


FIGURES = {
    EntropyFigure.PER_STATE: pooled_mean,
    EntropyFigure.PER_STATE_TOOLS: pooled_mean,
    EntropyFigure.POOLED: pooled_entropy,
}


def _tool_choices(row: dict[str, Any]) -> list[str]:
    """The actions that count for tool-selection entropy: tools and cot."""
    return [a for a in row["actions"] if a not in (ANSWER, INVALID)]


def _units(rows: list[dict[str, Any]], figure: str) -> list:
    if figure == EntropyFigure.POOLED:
        return [_tool_choices(r) for r in rows]
    if figure == EntropyFigure.PER_STATE_TOOLS:  # the m actions training offered: no `answer`
        return [tool_state_entropies(r["step_probs"], r["action_names"]) for r in rows]
    return [state_entropies(r["step_probs"]) for r in rows]  # computed once, then resampled


def _norm(bits: float, n: int) -> float:
    return bits / math.log2(n) if n > 1 else float("nan")


def _figure(
    rows: list[dict[str, Any]], figure: str, statistic, samples: int, seed: int
) -> tuple[float, float, float]:
    """(value, CI low, CI high) of a figure (accuracy or an ``EntropyFigure``) of rows pooled
    over their seeds: the point value from every seed's units, the interval from the
    hierarchical bootstrap (seeds, questions)."""
    if figure == "accuracy":
        groups = seed_groups(rows, lambda r: r["correct"])
    else:
        groups = seed_groups(rows, lambda r: _units([r], figure)[0])
    lo, hi = hierarchical_bootstrap(groups, statistic, samples, seed)
    return statistic(flatten(groups)), lo, hi


def _row(
    policy: str,
    category: str,
    rows: list[dict[str, Any]],
    n_actions: int,
    samples: int,
    seed: int,
    row_seed: int = UNTRAINED,
) -> dict[str, Any]:
    """One summary row of rows of one policy (one seed, or all its seeds pooled)."""
    answered = [r["correct"] for r in rows if not r["no_answer"]]
    acc, lo, hi = _figure(rows, "accuracy", accuracy, samples, seed)
    calls = sum(r["tool_calls"] for r in rows)
    steps = sum(len(r["actions"]) for r in rows)
    state_bits, s_lo, s_hi = _figure(rows, EntropyFigure.PER_STATE, pooled_mean, samples, seed)
    tool_bits, t_lo, t_hi = _figure(rows, EntropyFigure.PER_STATE_TOOLS, pooled_mean, samples, seed)
    pooled_bits, p_lo, p_hi = _figure(rows, EntropyFigure.POOLED, pooled_entropy, samples, seed)
    n_names = len(rows[0]["action_names"]) if rows else 0
    return {
        "policy": policy,
        "seed": row_seed,
        "category": category,
        "n": len({r["question_id"] for r in rows}),
        "accuracy": acc,
        "ci_low": lo,
        "ci_high": hi,
        "answered_accuracy": accuracy(answered),
        "no_answer_rate": sum(r["no_answer"] for r in rows) / len(rows),
        "invalid_rate": sum(r["invalid_actions"] for r in rows) / steps if steps else 0.0,
        "mean_steps": sum(r["steps"] for r in rows) / len(rows),
        "tool_error_rate": sum(r["tool_errors"] for r in rows) / calls if calls else 0.0,
        "state_entropy_bits": state_bits,
        "state_entropy_ci_low": s_lo,
        "state_entropy_ci_high": s_hi,
        "state_normalized_entropy": _norm(state_bits, n_names),
        "tool_state_entropy_bits": tool_bits,
        "tool_state_entropy_ci_low": t_lo,
        "tool_state_entropy_ci_high": t_hi,
        "tool_state_normalized_entropy": _norm(tool_bits, n_actions),
        "entropy_bits": pooled_bits,
        "entropy_ci_low": p_lo,
        "entropy_ci_high": p_hi,
        "normalized_entropy": _norm(pooled_bits, n_actions),
    }


Side = tuple[str, int]  # (policy, training seed)


def seeds_of(rows: list[dict[str, Any]], policy: str) -> list[int]:
    """A policy's training seeds in the order they appear ([-1] for an untrained policy)."""
    return list(dict.fromkeys(seed_of(r) for r in rows if r["policy"] == policy))


def shown_seed(rows: list[dict[str, Any]], side: Side) -> int:
    """The seed a test row names: -1 (no seed shown) when the policy has only the one."""
    return side[1] if len(seeds_of(rows, side[0])) > 1 else -1


def seed_pairs(rows: list[dict[str, Any]], a: str, b: str) -> list[tuple[Side, Side]]:
    """The (policy, seed) pairs a per-question test compares: seed by seed when both
    policies have the same seeds, else every seed of one against every seed of the other, so
    no seed's rows are dropped."""
    sa, sb = seeds_of(rows, a), seeds_of(rows, b)
    if sa == sb:
        return [((a, s), (b, s)) for s in sa]
    return [((a, x), (b, y)) for x in sa for y in sb]


def _paired(rows: list[dict[str, Any]], a: Side, b: Side) -> tuple[list[dict], list[dict]]:
    """Both sides' rows (one policy and seed each) on the questions they share, in order."""
    mine = {
        side: {r["question_id"]: r for r in rows if (r["policy"], seed_of(r)) == side}
        for side in (a, b)
    }
    shared = sorted(set(mine[a]) & set(mine[b]))
    return [mine[a][q] for q in shared], [mine[b][q] for q in shared]


def entropy_tests(
    rows: list[dict[str, Any]], policies: list[str], samples: int = 10_000, seed: int = 0
) -> list[dict[str, Any]]:
    """ppo (SPaRK's policy) against every other policy, seed by seed (seed_pairs): paired
    permutation tests over questions of the per-state and the pooled entropy differences."""
    out = []
    for other in [p for p in policies if p != TESTED] if TESTED in policies else []:
        for side_a, side_b in seed_pairs(rows, TESTED, other):
            ra, rb = _paired(rows, side_a, side_b)
            for figure, statistic in FIGURES.items():
                ua, ub = _units(ra, figure), _units(rb, figure)
                diff, p = paired_permutation_test(ua, ub, statistic, samples, seed)
                out.append(
                    {
                        "policy_a": TESTED,
                        "policy_b": other,
                        "seed_a": shown_seed(rows, side_a),
                        "seed_b": shown_seed(rows, side_b),
                        "figure": figure,
                        "n_questions": len(ra),
                        "entropy_a": statistic(ua),
                        "entropy_b": statistic(ub),
                        "difference": diff,
                        "p_value": p,
                    }
                )
    return out


def summarize(
    rows: list[dict[str, Any]], actions: list[str], samples: int = BOOTSTRAP_SAMPLES, seed: int = 0
) -> tuple[pa.Table, pa.Table, pa.Table, pa.Table]:
    """(summary per policy x category and overall, pooled over each policy's seeds (seed -1),
    plus each seed's overall row where a policy has several; action usage; paired McNemar
    tests and paired entropy tests, seed by seed)."""
    policies = list(dict.fromkeys(r["policy"] for r in rows))
    summary, usage_rows, pairs = [], [], []
    shown = [*actions, INVALID] if any(r["invalid_actions"] for r in rows) else list(actions)
    for policy in policies:
        mine = [r for r in rows if r["policy"] == policy]
        summary.append(_row(policy, OVERALL, mine, len(actions), samples, seed))
        for category in sorted({r["category"] for r in mine}):
            subset = [r for r in mine if r["category"] == category]
            summary.append(_row(policy, category, subset, len(actions), samples, seed))
        seeds = seeds_of(rows, policy)
        for s in seeds if len(seeds) > 1 else []:  # each seed's own overall row
            subset = [r for r in mine if seed_of(r) == s]
            summary.append(_row(policy, OVERALL, subset, len(actions), samples, seed, s))
        counts = Counter(a for r in mine for a in r["actions"] if a != ANSWER)
        total = sum(counts.values()) or 1
        usage_rows += [
            {"policy": policy, "action": a, "count": counts[a], "share": counts[a] / total}
            for a in shown
        ]
    for side_a, side_b in (s for a, b in combinations(policies, 2) for s in seed_pairs(rows, a, b)):
        ra, rb = _paired(rows, side_a, side_b)
        ca, cb = [r["correct"] for r in ra], [r["correct"] for r in rb]
        only_a, only_b, p = mcnemar_exact(ca, cb)
        guessed = sum(
            x["correct"] != y["correct"] and (x["no_answer"] or y["no_answer"])
            for x, y in zip(ra, rb, strict=True)
        )
        pairs.append(
            {
                "policy_a": side_a[0],
                "policy_b": side_b[0],
                "seed_a": shown_seed(rows, side_a),
                "seed_b": shown_seed(rows, side_b),
                "accuracy_a": accuracy(ca),
                "accuracy_b": accuracy(cb),
                "only_a_correct": only_a,
                "only_b_correct": only_b,
                "discordant_with_guess": guessed,
                "p_value": p,
            }
        )
    tests = entropy_tests(rows, policies, 10 * samples, seed)
    return (
        pa.Table.from_pylist(summary, schema=SUMMARY_SCHEMA),
        pa.Table.from_pylist(usage_rows, schema=USAGE_SCHEMA),
        pa.Table.from_pylist(pairs, schema=PAIRS_SCHEMA),
        pa.Table.from_pylist(tests, schema=ENTROPY_TESTS_SCHEMA),
    )


_IMAGE = re.compile(r"!\[([^\]]*)\]\(([^)\s]+\.png)\)")


def embed_images(text: str, out_dir: Path) -> str:
    """The report's Markdown with each PNG it links (relative to ``out_dir``) inlined as a
    data URI, so a viewer that cannot reach the run folder (the Prefect UI, a browser that
    refuses file:// links) still shows the plots."""

    def inline(match: re.Match[str]) -> str:
        path = out_dir / match.group(2)
        if not path.is_file():
            return match.group(0)
        data = base64.b64encode(path.read_bytes()).decode()
        return f"![{match.group(1)}](data:image/png;base64,{data})"

    return _IMAGE.sub(inline, text)


def write_html(text: str, out_dir: Path, name: str = "report.html") -> Path:
    """A self-contained HTML page of the report (plots inline) next to report.md: one file a
    browser opens as is."""
    from markdown_it import MarkdownIt

    body = MarkdownIt("commonmark").enable("table").render(embed_images(text, out_dir))
    page = (
        '<!doctype html>\n<html><head><meta charset="utf-8"><title>SPaRK evaluation report'
        "</title><style>body{font-family:sans-serif;max-width:72rem;margin:2rem auto;"
        "padding:0 1rem}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2rem .5rem}"
        "img{max-width:100%}</style></head><body>\n" + body + "</body></html>\n"
    )
    path = out_dir / name
    path.write_text(page)
    return path
