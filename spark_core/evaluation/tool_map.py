"""The per-category tool map: which actions each policy takes in which category (the point of
diverse tool use is the right tool for the domain), and the entropy of each category's action
distribution, with the same definition as the report's pooled tool-selection entropy (bits,
over the chosen tools and ``cot``; ``answer`` and ``invalid`` are not choices), with a
bootstrap CI over questions (and training seeds) and the Miller–Madow corrected value, whose
plug-in bias of about (m_hat - 1) / (2 N ln 2) bits differs with each policy's step count."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from spark_core.evaluation.plots import plot_tool_maps
from spark_core.evaluation.productivity import PRODUCTIVITY_SCHEMA, productivity, productivity_lines
from spark_core.evaluation.report import OVERALL
from spark_core.evaluation.seeds import flatten, hierarchical_bootstrap, seed_groups
from spark_core.evaluation.stats import BOOTSTRAP_SAMPLES, miller_madow_bits, pooled_entropy
from spark_core.metrics import entropy_bits
from spark_core.protocol import ANSWER, INVALID

_F = pa.float64()
TOOL_MAP_SCHEMA = pa.schema(
    [
        pa.field("policy", pa.string(), nullable=False),
        pa.field("category", pa.string(), nullable=False),
        pa.field("action", pa.string(), nullable=False),
        pa.field("count", pa.int64(), nullable=False),  # steps of the category with this action
        pa.field("share", _F, nullable=False),  # of the category's steps (answer excluded)
    ]
)
CATEGORY_ENTROPY_SCHEMA = pa.schema(
    [
        pa.field("policy", pa.string(), nullable=False),
        # a category, "overall", or CONDITIONAL: H(action | category)
        pa.field("category", pa.string(), nullable=False),
        pa.field("choices", pa.int64(), nullable=False),  # steps choosing a tool or cot
        pa.field("entropy_bits", _F, nullable=False),  # 0.0 without choices, as eval_summary
        pa.field("normalized_entropy", _F, nullable=False),  # / log2 m, m = len(actions)
        pa.field("entropy_ci_low", _F, nullable=False),  # 95% bootstrap over questions
        pa.field("entropy_ci_high", _F, nullable=False),
        pa.field("actions_seen", pa.int64(), nullable=False),  # m_hat: nonzero counts
        pa.field("entropy_mm_bits", _F, nullable=False),  # Miller–Madow corrected
    ]
)
CONDITIONAL = "H(action | category)"  # the category-entropy row of the weighted mean


def _category_units(row: dict[str, Any]) -> tuple[str, list[str]]:
    return row["category"], _choices(row)


def conditional_bits(units: list[tuple[str, list[str]]], correct: bool = False) -> float:
    """H(action | category) of (category, chosen actions) units: each category's entropy
    (Miller–Madow corrected when ``correct``) weighted by its share of the choices."""
    counts: dict[str, Counter] = {}
    for category, taken in units:
        counts.setdefault(category, Counter()).update(taken)
    total = sum(sum(c.values()) for c in counts.values())
    if not total:
        return float("nan")
    measure = miller_madow_bits if correct else entropy_bits
    return sum(sum(c.values()) * measure(list(c.values())) for c in counts.values()) / total


def _entropy_row(
    policy: str, category: str, rows: list[dict[str, Any]], norm: float, samples: int, seed: int
) -> dict[str, Any]:
    """One category's (or overall) entropy row, or the CONDITIONAL row of all the rows."""
    if category == CONDITIONAL:
        groups = seed_groups(rows, _category_units)
        units = flatten(groups)
        bits, mm = conditional_bits(units), conditional_bits(units, correct=True)
        lo, hi = hierarchical_bootstrap(groups, conditional_bits, samples, seed)
        choices = sum(len(u[1]) for u in units)
        seen = len({a for u in units for a in u[1]})
    else:
        groups = seed_groups(rows, _choices)
        units = flatten(groups)
        counts = Counter(a for u in units for a in u)
        bits, mm = pooled_entropy(units), miller_madow_bits(list(counts.values()))
        lo, hi = hierarchical_bootstrap(groups, pooled_entropy, samples, seed)
        choices, seen = sum(counts.values()), len(counts)
    return {
        "policy": policy,
        "category": category,
        "choices": choices,
        "entropy_bits": bits,
        "normalized_entropy": bits / norm,
        "entropy_ci_low": lo,
        "entropy_ci_high": hi,
        "actions_seen": seen,
        "entropy_mm_bits": mm,
    }


def _choices(row: dict[str, Any]) -> list[str]:
    """A question's chosen actions, as the report's pooled entropy counts them."""
    return [a for a in row["actions"] if a not in (ANSWER, INVALID)]


def tool_map(
    rows: list[dict[str, Any]], actions: list[str], samples: int = BOOTSTRAP_SAMPLES, seed: int = 0
) -> tuple[pa.Table, pa.Table]:
    """(counts and shares per policy x sorted category x action, in the configured action
    order plus ``invalid`` where any step was invalid; entropy per policy x category, overall
    and H(action | category), pooled over training seeds). Policies in the order they
    appear."""
    shown = [*actions, INVALID] if any(r["invalid_actions"] for r in rows) else list(actions)
    norm = math.log2(len(actions)) if len(actions) > 1 else float("nan")
    cells, entropies = [], []
    for policy in dict.fromkeys(r["policy"] for r in rows):
        mine = [r for r in rows if r["policy"] == policy]
        categories = sorted({r["category"] for r in mine})
        for category in [*categories, OVERALL, CONDITIONAL]:
            whole = category in (OVERALL, CONDITIONAL)
            subset = [r for r in mine if whole or r["category"] == category]
            entropies.append(_entropy_row(policy, category, subset, norm, samples, seed))
            if whole:
                continue
            counts = Counter(a for r in subset for a in r["actions"] if a != ANSWER)
            total = sum(counts.values())
            cells += [
                {
                    "policy": policy,
                    "category": category,
                    "action": a,
                    "count": counts[a],
                    "share": counts[a] / total if total else 0.0,
                }
                for a in shown
            ]
    return (
        pa.Table.from_pylist(cells, schema=TOOL_MAP_SCHEMA),
        pa.Table.from_pylist(entropies, schema=CATEGORY_ENTROPY_SCHEMA),
    )


def conditional_entropy(entropy: pa.Table, policy: str) -> float:
    """H(action | category) in bits: the per-category entropies weighted by their share of
    the policy's choices. Far below the overall entropy means tools matched to categories."""
    rows = [
        r
        for r in entropy.to_pylist()
        if r["policy"] == policy and r["category"] not in (OVERALL, CONDITIONAL)
    ]
    total = sum(r["choices"] for r in rows)
    return sum(r["choices"] * r["entropy_bits"] for r in rows) / total if total else float("nan")


def tool_map_lines(tmap: pa.Table, entropy: pa.Table, images: dict[str, Path]) -> list[str]:
    """The report's tool-map section: the entropy table (category x policy), then per policy
    its heat map and the counts behind it."""
    cells, ent = tmap.to_pylist(), entropy.to_pylist()
    policies = list(dict.fromkeys(r["policy"] for r in ent))
    categories = sorted({r["category"] for r in ent} - {OVERALL, CONDITIONAL})
    h = {(r["policy"], r["category"]): r for r in ent}
    lines = [
        "",
        "## Tool map per category",
        "",
        "Entropy of each category's action distribution (bits, tools and `cot`; the number of "
        "such steps in brackets). H(action | category) weights the categories by their steps: "
        "well below the overall entropy, the policy picks different tools in different "
        "categories.",
        "",
        "| category | " + " | ".join(policies) + " |",
        "|---|" + "---|" * len(policies),
    ]

    def cell(p: str, c: str) -> str:
        r = h.get((p, c))
        if r is None:
            return "–"
        return f"{r['entropy_bits']:.2f} ({r['choices']})" if r["choices"] else "– (0)"

    for c in [*categories, OVERALL]:
        lines.append(f"| {c} | " + " | ".join(cell(p, c) for p in policies) + " |")
    lines.append(
        "| H(action \\| category) | "
        + " | ".join(
            "–" if math.isnan(v := conditional_entropy(entropy, p)) else f"{v:.2f}"
            for p in policies
        )
        + " |"
    )
    lines += [
        "| H(action \\| category), 95% CI | "
        + " | ".join(_ci(h.get((p, CONDITIONAL))) for p in policies)
        + " |",
        "| H(action \\| category), Miller–Madow | "
        + " | ".join(_mm(h.get((p, CONDITIONAL))) for p in policies)
        + " |",
        "",
        "The plug-in entropy of N choices among m_hat actions seen is biased low by about "
        "(m_hat − 1) / (2 N ln 2) bits; the Miller–Madow value adds that back (per category, "
        "then weighted as above), so policies with different step counts compare. CIs: 95% "
        "bootstrap over questions (and training seeds).",
    ]
    actions = list(dict.fromkeys(r["action"] for r in cells))
    count = {(r["policy"], r["category"], r["action"]): r["count"] for r in cells}
    for p in policies:
        lines += ["", f"### {p}", ""]
        if p in images:
            lines += [f"![tool map {p}]({images[p].name})", ""]
        lines += [
            "| category | "
            + " | ".join(actions)
            + " | H, bits | H / log2 m | H 95% CI | H Miller–Madow |",
            "|---|" + "---|" * (len(actions) + 4),
        ]
        for c in (c for c in categories if (p, c) in h):
            r = h[(p, c)]
            bits, norm = f"{r['entropy_bits']:.2f}", f"{r['normalized_entropy']:.2f}"
            if not r["choices"] or math.isnan(r["normalized_entropy"]):
                bits, norm = (bits, "–") if r["choices"] else ("–", "–")
            row = " | ".join(str(count[(p, c, a)]) for a in actions)
            lines.append(f"| {c} | {row} | {bits} | {norm} | {_ci(r)} | {_mm(r)} |")
    return lines


def _ci(r: dict | None) -> str:
    if r is None or not r["choices"] or math.isnan(r["entropy_ci_low"]):
        return "–"
    return f"{r['entropy_ci_low']:.2f}–{r['entropy_ci_high']:.2f}"


def _mm(r: dict | None) -> str:
    if r is None or not r["choices"] or math.isnan(r["entropy_mm_bits"]):
        return "–"
    return f"{r['entropy_mm_bits']:.2f}"


@dataclass(frozen=True)
class ToolReport:
    """The tool sections of the evaluation report: tables to store, Markdown, PNGs."""

    tables: dict[str, tuple[pa.Table, pa.Schema]]  # name -> (table, schema)
    text: str
    images: dict[str, Path]  # policy -> its tool-map PNG


def tool_report(
    rows: list[dict[str, Any]],
    actions: list[str],
    out_dir: Path,
    samples: int = BOOTSTRAP_SAMPLES,
    seed: int = 0,
) -> ToolReport:
    """Tool productivity and the per-category tool map of the evaluation rows, with one
    heat map per policy written to ``out_dir``."""
    prod = productivity(rows)
    tmap, entropy = tool_map(rows, actions, samples, seed)
    images = plot_tool_maps(tmap, entropy, out_dir)
    text = "\n".join([*productivity_lines(prod), *tool_map_lines(tmap, entropy, images)]) + "\n"
    return ToolReport(
        {
            "productivity": (prod, PRODUCTIVITY_SCHEMA),
            "tool_map": (tmap, TOOL_MAP_SCHEMA),
            "category_entropy": (entropy, CATEGORY_ENTROPY_SCHEMA),
        },
        text,
        images,
    )
