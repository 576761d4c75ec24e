"""The report's Markdown: the overall table (pooled rows, then each seed's), the entropy and
accuracy tests, repairs, accuracy per category and action usage."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa

from spark_core.evaluation.repairs import repair_lines
from spark_core.evaluation.report import OVERALL
from spark_core.evaluation.seeds import seed_label


def _pct(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:.1%}"


def _bits(value: float, low: float, high: float) -> str:
    return "–" if math.isnan(value) else f"{value:.2f} ({low:.2f}–{high:.2f})"


def _p(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:.3g}"


def _ratio(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:.2f}"


def markdown(
    summary: pa.Table,
    usage: pa.Table,
    pairs: pa.Table,
    tests: pa.Table,
    images: dict[str, Path],
    setup: str = "",
    repairs: pa.Table | None = None,  # evaluation/repairs.py; None: no repair section
    claims: Sequence[str] = (),  # claims.claim_lines: the section at the top
    common: Sequence[str] = (),  # common_entropy.common_lines: beside the overall table
) -> str:
    """The report's Markdown (the tool sections are appended by tool_map.py)."""
    every = summary.to_pylist()
    rows = [r for r in every if r["seed"] == -1]  # pooled over seeds
    policies = list(dict.fromkeys(r["policy"] for r in rows))
    overall = [r for r in every if r["category"] == OVERALL]
    overall.sort(key=lambda r: (policies.index(r["policy"]), r["seed"]))
    lines = [
        "# SPaRK evaluation report",
        "",
        *claims,
        *([setup, ""] if setup else []),
        "## Overall",
        "",
        "| policy | n | accuracy (95% CI) | answered acc. | no-answer | invalid actions | "
        "per-state H, bits (95% CI) | per-state H / log2 k | per-state H without `answer`, "
        "bits (95% CI) | … / log2 m | pooled H, bits (95% CI) | "
        "pooled H / log2 m | mean steps | tool errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in overall:
        state = _bits(
            r["state_entropy_bits"], r["state_entropy_ci_low"], r["state_entropy_ci_high"]
        )
        tools = _bits(
            r["tool_state_entropy_bits"],
            r["tool_state_entropy_ci_low"],
            r["tool_state_entropy_ci_high"],
        )
        lines.append(
            f"| {seed_label(r['policy'], r['seed'])} | {r['n']} | "
            f"{r['accuracy']:.1%} ({r['ci_low']:.1%}–{r['ci_high']:.1%}) | "
            f"{_pct(r['answered_accuracy'])} | {r['no_answer_rate']:.1%} | "
            f"{r['invalid_rate']:.1%} | "
            f"{state} | {_ratio(r['state_normalized_entropy'])} | "
            f"{tools} | "
            f"{_ratio(r['tool_state_normalized_entropy'])} | "
            f"{_bits(r['entropy_bits'], r['entropy_ci_low'], r['entropy_ci_high'])} | "
            f"{_ratio(r['normalized_entropy'])} | {r['mean_steps']:.2f} | "
            f"{r['tool_error_rate']:.1%} |"
        )
    lines += list(common)
    lines += [
        "",
        "## Entropy tests (paired permutation test over questions, two-sided)",
        "",
        "| A | B | figure | questions | H(A), bits | H(B), bits | A − B | p |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in tests.to_pylist():
        lines.append(
            f"| {seed_label(r['policy_a'], r['seed_a'])} | "
            f"{seed_label(r['policy_b'], r['seed_b'])} | {r['figure']} | {r['n_questions']} | "
            f"{_ratio(r['entropy_a'])} | {_ratio(r['entropy_b'])} | {_ratio(r['difference'])} | "
            f"{_p(r['p_value'])} |"
        )
    if not tests.num_rows:
        lines.append("| – | – | – | – | – | – | – | – |")
    lines += [
        "",
        "## Paired accuracy differences (McNemar exact test, same questions)",
        "",
        "| A | B | acc A | acc B | only A right | only B right | of these, with a guess | p |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in pairs.to_pylist():
        lines.append(
            f"| {seed_label(r['policy_a'], r['seed_a'])} | "
            f"{seed_label(r['policy_b'], r['seed_b'])} | {r['accuracy_a']:.1%} | "
            f"{r['accuracy_b']:.1%} | {r['only_a_correct']} | {r['only_b_correct']} | "
            f"{r['discordant_with_guess']} | {r['p_value']:.3g} |"
        )
    if repairs is not None:
        lines += repair_lines(repairs)
    categories = sorted({r["category"] for r in rows} - {OVERALL})
    cell = {(r["policy"], r["category"]): r for r in rows}
    lines += [
        "",
        "## Accuracy per category",
        "",
        "| category | " + " | ".join(policies) + " |",
        "|---|" + "---|" * len(policies),
    ]
    for c in categories:
        lines.append(
            f"| {c} | "
            + " | ".join(
                f"{cell[(p, c)]['accuracy']:.0%} (n={cell[(p, c)]['n']})" if (p, c) in cell else "–"
                for p in policies
            )
            + " |"
        )
    actions = list(dict.fromkeys(r["action"] for r in usage.to_pylist()))
    share = {(r["policy"], r["action"]): r["share"] for r in usage.to_pylist()}
    lines += [
        "",
        "## Action usage (share of steps)",
        "",
        "| policy | " + " | ".join(actions) + " |",
        "|---|" + "---|" * len(actions),
    ]
    for p in policies:
        lines.append(f"| {p} | " + " | ".join(f"{share[(p, a)]:.0%}" for a in actions) + " |")
    lines += ["", "## Plots", ""] + [f"![{k}]({v.name})" for k, v in images.items()]
    return "\n".join(lines) + "\n"
