"""Evaluation summary tables and the report: Markdown plus PNG plots (accuracy per category
with 95% CIs, action usage heat map, tool-selection entropy)."""

from __future__ import annotations

import base64
import re
from collections import Counter
from itertools import combinations
from pathlib import Path
from typing import Any

import pyarrow as pa

from spark_core.action_format import ANSWER
from spark_core.evaluation.stats import accuracy, bootstrap_ci, mcnemar_exact
from spark_core.metrics import entropy_bits, normalized_entropy

OVERALL = "overall"
SUMMARY_SCHEMA = pa.schema(
    [
        pa.field("policy", pa.string(), nullable=False),
        pa.field("category", pa.string(), nullable=False),
        pa.field("n", pa.int64(), nullable=False),
        pa.field("accuracy", pa.float64(), nullable=False),
        pa.field("ci_low", pa.float64(), nullable=False),
        pa.field("ci_high", pa.float64(), nullable=False),
        pa.field("no_answer_rate", pa.float64(), nullable=False),
        pa.field("mean_steps", pa.float64(), nullable=False),
        pa.field("tool_error_rate", pa.float64(), nullable=False),
        pa.field("entropy_bits", pa.float64(), nullable=False),
        pa.field("normalized_entropy", pa.float64(), nullable=False),
    ]
)
USAGE_SCHEMA = pa.schema(
    [
        pa.field("policy", pa.string(), nullable=False),
        pa.field("action", pa.string(), nullable=False),
        pa.field("count", pa.int64(), nullable=False),
        pa.field("share", pa.float64(), nullable=False),
    ]
)
PAIRS_SCHEMA = pa.schema(
    [
        pa.field("policy_a", pa.string(), nullable=False),
        pa.field("policy_b", pa.string(), nullable=False),
        pa.field("accuracy_a", pa.float64(), nullable=False),
        pa.field("accuracy_b", pa.float64(), nullable=False),
        pa.field("only_a_correct", pa.int64(), nullable=False),
        pa.field("only_b_correct", pa.int64(), nullable=False),
        pa.field("p_value", pa.float64(), nullable=False),
    ]
)


def _row(
    policy: str, category: str, rows: list[dict[str, Any]], n_actions: int, samples: int, seed: int
) -> dict[str, Any]:
    correct = [r["correct"] for r in rows]
    lo, hi = bootstrap_ci(correct, samples, seed)
    usage = Counter(a for r in rows for a in r["actions"] if a != ANSWER)
    calls = sum(r["tool_calls"] for r in rows)
    return {
        "policy": policy,
        "category": category,
        "n": len(rows),
        "accuracy": accuracy(correct),
        "ci_low": lo,
        "ci_high": hi,
        "no_answer_rate": sum(r["no_answer"] for r in rows) / len(rows),
        "mean_steps": sum(r["steps"] for r in rows) / len(rows),
        "tool_error_rate": sum(r["tool_errors"] for r in rows) / calls if calls else 0.0,
        "entropy_bits": entropy_bits(usage),
        "normalized_entropy": normalized_entropy(usage, n_actions),
    }


def summarize(
    rows: list[dict[str, Any]], actions: list[str], samples: int = 1000, seed: int = 0
) -> tuple[pa.Table, pa.Table, pa.Table]:
    """(summary per policy x category and overall, action usage, paired McNemar tests)."""
    policies = list(dict.fromkeys(r["policy"] for r in rows))
    summary, usage_rows, pairs = [], [], []
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
            for a in actions
        ]
    by_policy = {
        p: {r["question_id"]: r["correct"] for r in rows if r["policy"] == p} for p in policies
    }
    for a, b in combinations(policies, 2):
        shared = sorted(set(by_policy[a]) & set(by_policy[b]))
        ca, cb = [by_policy[a][q] for q in shared], [by_policy[b][q] for q in shared]
        only_a, only_b, p = mcnemar_exact(ca, cb)
        pairs.append(
            {
                "policy_a": a,
                "policy_b": b,
                "accuracy_a": accuracy(ca),
                "accuracy_b": accuracy(cb),
                "only_a_correct": only_a,
                "only_b_correct": only_b,
                "p_value": p,
            }
        )
    return (
        pa.Table.from_pylist(summary, schema=SUMMARY_SCHEMA),
        pa.Table.from_pylist(usage_rows, schema=USAGE_SCHEMA),
        pa.Table.from_pylist(pairs, schema=PAIRS_SCHEMA),
    )


def plot(summary: pa.Table, usage: pa.Table, out_dir: Path) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    out_dir.mkdir(parents=True, exist_ok=True)
    rows = summary.to_pylist()
    policies = list(dict.fromkeys(r["policy"] for r in rows))
    categories = [OVERALL] + sorted({r["category"] for r in rows} - {OVERALL})
    cell = {(r["policy"], r["category"]): r for r in rows}
    paths = {}

    fig, ax = plt.subplots(figsize=(max(8.0, 0.35 * len(categories) * len(policies) + 2), 4.5))
    width = 0.8 / len(policies)
    x = np.arange(len(categories))
    for i, policy in enumerate(policies):
        acc = [cell.get((policy, c), {}).get("accuracy", np.nan) for c in categories]
        pairs = list(zip(acc, categories, strict=True))
        lo = [a - cell.get((policy, c), {}).get("ci_low", a) for a, c in pairs]
        hi = [cell.get((policy, c), {}).get("ci_high", a) - a for a, c in pairs]
        ax.bar(
            x + (i - (len(policies) - 1) / 2) * width,
            acc,
            width,
            yerr=[lo, hi],
            capsize=2,
            label=policy,
        )
    ax.set_xticks(x, categories, rotation=45, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy (95% bootstrap CI)")
    ax.set_title("Accuracy per category")
    ax.legend()
    fig.tight_layout()
    paths["accuracy"] = out_dir / "accuracy_by_category.png"
    fig.savefig(paths["accuracy"], dpi=120)
    plt.close(fig)

    shares = usage.to_pylist()
    actions = list(dict.fromkeys(r["action"] for r in shares))
    grid = np.array(
        [
            [
                next(r["share"] for r in shares if r["policy"] == p and r["action"] == a)
                for a in actions
            ]
            for p in policies
        ]
    )
    fig, ax = plt.subplots(figsize=(1.1 * len(actions) + 2, 0.6 * len(policies) + 1.8))
    image = ax.imshow(grid, cmap="viridis", vmin=0, vmax=max(grid.max(), 1e-9), aspect="auto")
    ax.set_xticks(range(len(actions)), actions, rotation=45, ha="right")
    ax.set_yticks(range(len(policies)), policies)
    for i in range(len(policies)):
        for j in range(len(actions)):
            ax.text(
                j,
                i,
                f"{grid[i, j]:.0%}",
                ha="center",
                va="center",
                color="white" if grid[i, j] < grid.max() / 2 else "black",
                fontsize=8,
            )
    ax.set_title("Action usage (share of steps)")
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    paths["usage"] = out_dir / "action_usage.png"
    fig.savefig(paths["usage"], dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(1.5 * len(policies) + 2, 3.5))
    overall = [cell[(p, OVERALL)] for p in policies]
    bars = ax.bar(policies, [r["normalized_entropy"] for r in overall], color="tab:purple")
    for bar, r in zip(bars, overall, strict=True):
        ax.text(
            bar.get_x() + bar.get_width() / 2,
            bar.get_height(),
            f"{r['entropy_bits']:.2f} bits",
            ha="center",
            va="bottom",
        )
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("entropy / log2(9)")
    ax.set_title("Tool-selection entropy")
    fig.tight_layout()
    paths["entropy"] = out_dir / "entropy.png"
    fig.savefig(paths["entropy"], dpi=120)
    plt.close(fig)
    return paths


def markdown(summary: pa.Table, usage: pa.Table, pairs: pa.Table, images: dict[str, Path]) -> str:
    rows = summary.to_pylist()
    policies = list(dict.fromkeys(r["policy"] for r in rows))
    overall = {r["policy"]: r for r in rows if r["category"] == OVERALL}
    lines = [
        "# SPaRK evaluation report",
        "",
        "## Overall",
        "",
        "| policy | n | accuracy (95% CI) | entropy (bits) | normalised | no-answer | "
        "mean steps | tool errors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for p in policies:
        r = overall[p]
        lines.append(
            f"| {p} | {r['n']} | {r['accuracy']:.1%} ({r['ci_low']:.1%}–"
            f"{r['ci_high']:.1%}) | {r['entropy_bits']:.2f} | "
            f"{r['normalized_entropy']:.2f} | {r['no_answer_rate']:.1%} | "
            f"{r['mean_steps']:.2f} | {r['tool_error_rate']:.1%} |"
        )
    lines += [
        "",
        "## Paired differences (McNemar exact test, same questions)",
        "",
        "| A | B | acc A | acc B | only A right | only B right | p |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in pairs.to_pylist():
        lines.append(
            f"| {r['policy_a']} | {r['policy_b']} | {r['accuracy_a']:.1%} | "
            f"{r['accuracy_b']:.1%} | {r['only_a_correct']} | {r['only_b_correct']} | "
            f"{r['p_value']:.3g} |"
        )
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
