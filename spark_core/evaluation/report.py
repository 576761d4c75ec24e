"""Evaluation summary tables and the report: Markdown plus PNG plots (accuracy per category
with 95% CIs, action usage heat map, tool-selection entropy)."""

from __future__ import annotations

import base64
import math
import re
from collections import Counter
from itertools import combinations
from pathlib import Path
from typing import Any

import pyarrow as pa

from spark_core.evaluation.repairs import repair_lines
from spark_core.evaluation.stats import (
    accuracy,
    bootstrap_ci,
    bootstrap_stat,
    mcnemar_exact,
    paired_permutation_test,
    pooled_entropy,
    pooled_mean,
    state_entropies,
    tool_state_entropies,
)
from spark_core.synthesis.action_format import ANSWER, INVALID

OVERALL = "overall"
_F = pa.float64()
SUMMARY_SCHEMA = pa.schema(
    [
        pa.field("policy", pa.string(), nullable=False),
        pa.field("category", pa.string(), nullable=False),
        pa.field("n", pa.int64(), nullable=False),
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
        pa.field("figure", pa.string(), nullable=False),  # per-state | pooled
        pa.field("n_questions", pa.int64(), nullable=False),
        pa.field("entropy_a", _F, nullable=False),
        pa.field("entropy_b", _F, nullable=False),
        pa.field("difference", _F, nullable=False),
        pa.field("p_value", _F, nullable=False),
    ]
)
TESTED = "spark"  # the entropy tests compare this policy with every other one
FIGURES = {"per-state": pooled_mean, "per-state tools": pooled_mean, "pooled": pooled_entropy}


def _chosen(row: dict[str, Any]) -> list[str]:
    """The actions that count for tool-selection entropy: tools and cot."""
    return [a for a in row["actions"] if a not in (ANSWER, INVALID)]


def _units(rows: list[dict[str, Any]], figure: str) -> list:
    if figure == "pooled":
        return [_chosen(r) for r in rows]
    if figure == "per-state tools":  # the m actions training offered: `answer` left out
        return [tool_state_entropies(r["step_probs"], r["action_names"]) for r in rows]
    return [state_entropies(r["step_probs"]) for r in rows]  # computed once, then resampled


def _norm(bits: float, n: int) -> float:
    return bits / math.log2(n) if n > 1 else float("nan")


def _row(
    policy: str, category: str, rows: list[dict[str, Any]], n_actions: int, samples: int, seed: int
) -> dict[str, Any]:
    correct = [r["correct"] for r in rows]
    answered = [r["correct"] for r in rows if not r["no_answer"]]
    lo, hi = bootstrap_ci(correct, samples, seed)
    calls = sum(r["tool_calls"] for r in rows)
    steps = sum(len(r["actions"]) for r in rows)
    per_state = _units(rows, "per-state")
    pooled = _units(rows, "pooled")
    state_bits = pooled_mean(per_state)
    s_lo, s_hi = bootstrap_stat(per_state, pooled_mean, samples, seed)
    per_tool_state = _units(rows, "per-state tools")
    tool_bits = pooled_mean(per_tool_state)
    t_lo, t_hi = bootstrap_stat(per_tool_state, pooled_mean, samples, seed)
    pooled_bits = pooled_entropy(pooled)
    p_lo, p_hi = bootstrap_stat(pooled, pooled_entropy, samples, seed)
    n_names = len(rows[0]["action_names"]) if rows else 0
    return {
        "policy": policy,
        "category": category,
        "n": len(rows),
        "accuracy": accuracy(correct),
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


def _paired(rows: list[dict[str, Any]], a: str, b: str) -> tuple[list[dict], list[dict]]:
    """Both policies' rows on the questions they share, in question order."""
    mine = {p: {r["question_id"]: r for r in rows if r["policy"] == p} for p in (a, b)}
    shared = sorted(set(mine[a]) & set(mine[b]))
    return [mine[a][q] for q in shared], [mine[b][q] for q in shared]


def entropy_tests(
    rows: list[dict[str, Any]], policies: list[str], samples: int = 10_000, seed: int = 0
) -> list[dict[str, Any]]:
    """SPaRK against every other policy: paired permutation tests over questions of the
    per-state and the pooled entropy differences."""
    out = []
    for other in [p for p in policies if p != TESTED] if TESTED in policies else []:
        ra, rb = _paired(rows, TESTED, other)
        for figure, statistic in FIGURES.items():
            ua, ub = _units(ra, figure), _units(rb, figure)
            diff, p = paired_permutation_test(ua, ub, statistic, samples, seed)
            out.append(
                {
                    "policy_a": TESTED,
                    "policy_b": other,
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
    rows: list[dict[str, Any]], actions: list[str], samples: int = 1000, seed: int = 0
) -> tuple[pa.Table, pa.Table, pa.Table, pa.Table]:
    """(summary per policy x category and overall, action usage, paired McNemar tests,
    paired entropy tests)."""
    policies = list(dict.fromkeys(r["policy"] for r in rows))
    summary, usage_rows, pairs = [], [], []
    shown = [*actions, INVALID] if any(r["invalid_actions"] for r in rows) else list(actions)
    for policy in policies:
        mine = [r for r in rows if r["policy"] == policy]
        summary.append(_row(policy, OVERALL, mine, len(actions), samples, seed))
        for category in sorted({r["category"] for r in mine}):
            subset = [r for r in mine if r["category"] == category]
            summary.append(_row(policy, category, subset, len(actions), samples, seed))
        counts = Counter(a for r in mine for a in r["actions"] if a != ANSWER)
        total = sum(counts.values()) or 1
        usage_rows += [
            {"policy": policy, "action": a, "count": counts[a], "share": counts[a] / total}
            for a in shown
        ]
    for a, b in combinations(policies, 2):
        ra, rb = _paired(rows, a, b)
        ca, cb = [r["correct"] for r in ra], [r["correct"] for r in rb]
        only_a, only_b, p = mcnemar_exact(ca, cb)
        guessed = sum(
            x["correct"] != y["correct"] and (x["no_answer"] or y["no_answer"])
            for x, y in zip(ra, rb, strict=True)
        )
        pairs.append(
            {
                "policy_a": a,
                "policy_b": b,
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
) -> str:
    rows = summary.to_pylist()
    policies = list(dict.fromkeys(r["policy"] for r in rows))
    overall = {r["policy"]: r for r in rows if r["category"] == OVERALL}
    lines = [
        "# SPaRK evaluation report",
        "",
        *([setup, ""] if setup else []),
        "## Overall",
        "",
        "| policy | n | accuracy (95% CI) | answered acc. | no-answer | invalid actions | "
        "per-state H, bits (95% CI) | per-state H / log2 k | per-state H without `answer`, "
        "bits (95% CI) | … / log2 m | pooled H, bits (95% CI) | "
        "pooled H / log2 m | mean steps | tool errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in policies:
        r = overall[p]
        state = _bits(
            r["state_entropy_bits"], r["state_entropy_ci_low"], r["state_entropy_ci_high"]
        )
        tools = _bits(
            r["tool_state_entropy_bits"],
            r["tool_state_entropy_ci_low"],
            r["tool_state_entropy_ci_high"],
        )
        lines.append(
            f"| {p} | {r['n']} | {r['accuracy']:.1%} ({r['ci_low']:.1%}–{r['ci_high']:.1%}) | "
            f"{_pct(r['answered_accuracy'])} | {r['no_answer_rate']:.1%} | "
            f"{r['invalid_rate']:.1%} | "
            f"{state} | {_ratio(r['state_normalized_entropy'])} | "
            f"{tools} | "
            f"{_ratio(r['tool_state_normalized_entropy'])} | "
            f"{_bits(r['entropy_bits'], r['entropy_ci_low'], r['entropy_ci_high'])} | "
            f"{_ratio(r['normalized_entropy'])} | {r['mean_steps']:.2f} | "
            f"{r['tool_error_rate']:.1%} |"
        )
    lines += [
        "",
        "## Entropy tests (paired permutation test over questions, two-sided)",
        "",
        "| A | B | figure | questions | H(A), bits | H(B), bits | A − B | p |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in tests.to_pylist():
        lines.append(
            f"| {r['policy_a']} | {r['policy_b']} | {r['figure']} | {r['n_questions']} | "
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
            f"| {r['policy_a']} | {r['policy_b']} | {r['accuracy_a']:.1%} | "
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
