"""The report's PNG plots: accuracy per category with 95% CIs, the action usage heat map,
tool-selection entropy (per-state and pooled) with bootstrap CIs, accuracy against entropy
(every policy, the base@T sampling baselines joined), and one category x action tool map per
policy."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pyarrow as pa

from spark_core.evaluation.report import OVERALL


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot(summary: pa.Table, usage: pa.Table, out_dir: Path) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    out_dir.mkdir(parents=True, exist_ok=True)
    rows = [r for r in summary.to_pylist() if r["seed"] == -1]  # pooled over seeds
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
    paths["accuracy"] = _save(fig, out_dir / "accuracy_by_category.png")

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
    paths["usage"] = _save(fig, out_dir / "action_usage.png")

    fig, ax = plt.subplots(figsize=(1.8 * len(policies) + 2, 3.8))
    overall = [cell[(p, OVERALL)] for p in policies]
    x = np.arange(len(policies))
    for offset, (key, low, high, label) in zip(
        (-0.2, 0.2),
        (
            ("state_entropy_bits", "state_entropy_ci_low", "state_entropy_ci_high", "per-state"),
            ("entropy_bits", "entropy_ci_low", "entropy_ci_high", "pooled chosen actions"),
        ),
        strict=True,
    ):
        values = np.array([r[key] for r in overall], dtype=float)
        errors = [
            np.nan_to_num(values - np.array([r[low] for r in overall], dtype=float)),
            np.nan_to_num(np.array([r[high] for r in overall], dtype=float) - values),
        ]
        ax.bar(x + offset, np.nan_to_num(values), 0.4, yerr=errors, capsize=3, label=label)
    ax.set_xticks(x, policies)
    ax.set_ylabel("entropy, bits (95% bootstrap CI)")
    ax.set_title("Tool-selection entropy")
    ax.legend()
    paths["entropy"] = _save(fig, out_dir / "entropy.png")
    return paths


def entropy_points(summary: pa.Table, common: pa.Table | None) -> list[dict]:
    """Per policy (pooled over seeds): accuracy and an entropy, each with its 95% CI. The
    entropy is the common-state one where the policy has common states, else the on-policy
    per-state entropy without ``answer`` (the pooled entropy under free decoding)."""
    shared = {r["policy"]: r for r in (common.to_pylist() if common else []) if r["seed"] == -1}
    points = []
    for r in summary.to_pylist():
        if r["seed"] != -1 or r["category"] != OVERALL:
            continue
        c = shared.get(r["policy"])
        if c is not None:
            x = (c["entropy_bits"], c["ci_low"], c["ci_high"], "common-state")
        elif not math.isnan(r["tool_state_entropy_bits"]):
            t = (
                "tool_state_entropy_bits",
                "tool_state_entropy_ci_low",
                "tool_state_entropy_ci_high",
            )
            x = (*(r[k] for k in t), "on-policy per-state")
        else:
            x = (r["entropy_bits"], r["entropy_ci_low"], r["entropy_ci_high"], "pooled")
        points.append(
            {
                "policy": r["policy"],
                "accuracy": (r["accuracy"], r["ci_low"], r["ci_high"]),
                "entropy": x[:3],
                "figure": x[3],
            }
        )
    return points


def plot_accuracy_entropy(summary: pa.Table, common: pa.Table | None, out_dir: Path) -> Path:
    """Accuracy against tool-selection entropy, 95% CIs on both axes: "more diverse at the
    same accuracy than sampling" reads as ppo (SPaRK) right of the base@T curve at its height."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    points = entropy_points(summary, common)
    fig, ax = plt.subplots(figsize=(6.5, 4.8))
    for p in points:
        (y, ylo, yhi), (x, xlo, xhi) = p["accuracy"], p["entropy"]
        sampled = p["policy"].startswith("base@")
        ax.errorbar(
            x,
            y,
            xerr=[[max(0.0, x - xlo)], [max(0.0, xhi - x)]],
            yerr=[[max(0.0, y - ylo)], [max(0.0, yhi - y)]],
            fmt="s" if sampled else "o",
            color="grey" if sampled else None,
            capsize=3,
        )
        ax.annotate(p["policy"], (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
    curve = sorted((p["entropy"][0], p["accuracy"][0]) for p in points if "@" in p["policy"])
    if len(curve) > 1:
        ax.plot(*zip(*curve, strict=True), "--", color="grey", linewidth=1)
    figures = sorted({p["figure"] for p in points})
    ax.set_xlabel(f"tool-selection entropy, bits ({', '.join(figures)}; 95% CI)")
    ax.set_ylabel("accuracy (95% CI)")
    ax.set_title("Accuracy against tool-selection entropy")
    return _save(fig, out_dir / "accuracy_vs_entropy.png")


def _slug(policy: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", policy)


def _label(category: str, entropy: dict) -> str:
    if not entropy["choices"]:
        return f"{category} (0 steps)"
    return f"{category} ({entropy['choices']} steps, H {entropy['entropy_bits']:.2f})"


def grid(tmap: pa.Table, policy: str) -> tuple[list[str], list[str], list[list[float]]]:
    """(categories, actions, shares[category][action]) of one policy: its heat map's matrix."""
    mine = [r for r in tmap.to_pylist() if r["policy"] == policy]
    categories = list(dict.fromkeys(r["category"] for r in mine))
    actions = list(dict.fromkeys(r["action"] for r in mine))
    share = {(r["category"], r["action"]): r["share"] for r in mine}
    return categories, actions, [[share[(c, a)] for a in actions] for c in categories]


def plot_tool_maps(tool_map: pa.Table, entropy: pa.Table, out_dir: Path) -> dict[str, Path]:
    """One category x action heat map per policy (``evaluation/tool_map.py``): each row is the
    category's share of steps per action, on one colour scale (0–1) so that policies compare;
    row labels carry the category's entropy in bits."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    out_dir.mkdir(parents=True, exist_ok=True)
    ent = {(r["policy"], r["category"]): r for r in entropy.to_pylist()}
    paths: dict[str, Path] = {}
    for policy in dict.fromkeys(tool_map.column("policy").to_pylist()):
        categories, actions, shares = grid(tool_map, policy)
        matrix = np.array(shares)
        fig, ax = plt.subplots(figsize=(0.9 * len(actions) + 4, 0.38 * len(categories) + 2))
        image = ax.imshow(matrix, cmap="viridis", vmin=0, vmax=1, aspect="auto")
        ax.set_xticks(range(len(actions)), actions, rotation=45, ha="right")
        ax.set_yticks(range(len(categories)), [_label(c, ent[(policy, c)]) for c in categories])
        for i, j in zip(*np.nonzero(matrix), strict=True):
            color = "white" if matrix[i, j] < 0.5 else "black"
            ax.text(j, i, f"{matrix[i, j]:.0%}", ha="center", va="center", color=color, fontsize=7)
        ax.set_title(f"{policy}: share of each category's steps per action (H: entropy, bits)")
        fig.colorbar(image, ax=ax)
        name = f"tool_map_{_slug(policy)}.png"
        if any(p.name == name for p in paths.values()):  # two policies with the same slug
            name = f"tool_map_{_slug(policy)}_{len(paths)}.png"
        paths[policy] = _save(fig, out_dir / name)
    return paths
