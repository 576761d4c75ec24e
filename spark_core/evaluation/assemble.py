"""The whole evaluation report from the evaluation rows (and the common-state distributions):
its tables (to store as artifacts), its Markdown, HTML and plots (written to a local folder).
The task only stores and shows it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from spark_core.config import SAMPLED_POLICY, RunConfig
from spark_core.evaluation.claims import CLAIMS_SCHEMA, claim_lines, claims_table
from spark_core.evaluation.common_entropy import COMMON_ENTROPY_SCHEMA, common_entropy, common_lines
from spark_core.evaluation.plots import plot, plot_accuracy_entropy
from spark_core.evaluation.repairs import REPAIRS_SCHEMA, repair_table
from spark_core.evaluation.report import (
    ENTROPY_TESTS_SCHEMA,
    PAIRS_SCHEMA,
    SUMMARY_SCHEMA,
    USAGE_SCHEMA,
    summarize,
    write_html,
)
from spark_core.evaluation.report_text import markdown
from spark_core.evaluation.tool_map import tool_report


@dataclass(frozen=True)
class ReportFiles:
    """The report: tables by name, in the order they are stored (``summary``, ``usage``,
    ``pairs``, ``entropy_tests``, ``repairs`` where tool calls were repaired, then the tool
    tables), the Markdown text and the files written; the claims and the common-state
    entropy (None without common states) and the accuracy-against-entropy chart beside."""

    tables: dict[str, tuple[pa.Table, pa.Schema]]
    text: str
    markdown: Path
    html: Path
    images: dict[str, Path]  # accuracy, entropy and usage plots
    tool_maps: dict[str, Path]  # policy -> its category x action heat map
    claims: pa.Table  # claims.CLAIMS_SCHEMA
    common_entropy: pa.Table | None  # common_entropy.COMMON_ENTROPY_SCHEMA
    accuracy_entropy: Path  # the accuracy against entropy chart


def setup_text(cfg: RunConfig) -> str:
    """The report's opening paragraph: how the policies were decoded, what k and m are."""
    n = len(cfg.rollout.actions)
    temperatures = ", ".join(f"{t:g}" for t in cfg.evaluation.temperatures)
    return (
        f"Action decoding: **{cfg.evaluation.action_decoding}**; up to {cfg.evaluation.steps} "
        f"steps; `{SAMPLED_POLICY}` is the base model sampled at T = {temperatures} "
        "(`base@0.7`, ...), every other policy decodes greedily. "
        f"k = {n + 1} action names (the {n} actions and `answer`), m = {n} actions (tools and "
        "`cot`). Column meanings: README, *Evaluation and the report*."
    )


def build_report(
    cfg: RunConfig,
    rows: list[dict[str, Any]],
    out_dir: Path,
    common_states: list[dict[str, Any]] | None = None,
) -> ReportFiles:
    """Claims, summaries, paired tests, common-state entropy, repairs, tool productivity and
    tool maps of ``rows`` (and ``common_states``: common_schema.COMMON_STATES_SCHEMA rows),
    with ``report.md``, ``report.html`` and the PNGs written to ``out_dir``."""
    ev, actions = cfg.evaluation, cfg.rollout.actions
    summary, usage, pairs, tests = summarize(rows, actions, ev.bootstrap_samples, ev.seed)
    tables = {
        "summary": (summary, SUMMARY_SCHEMA),
        "usage": (usage, USAGE_SCHEMA),
        "pairs": (pairs, PAIRS_SCHEMA),
        "entropy_tests": (tests, ENTROPY_TESTS_SCHEMA),
    }
    repairs = None
    if cfg.rollout.tool_retries:
        repairs = repair_table(rows, [a for a in actions if a != "cot"])
        tables["repairs"] = (repairs, REPAIRS_SCHEMA)
    claims = claims_table(ev, rows, common_states)
    common = common_entropy(common_states, ev.bootstrap_samples, ev.seed) if common_states else None
    images = plot(summary, usage, out_dir)
    chart = plot_accuracy_entropy(summary, common, out_dir)
    tools = tool_report(rows, actions, out_dir, ev.bootstrap_samples, ev.seed)
    tables.update(tools.tables)  # productivity, tool_map, category_entropy
    text = markdown(
        summary,
        usage,
        pairs,
        tests,
        {**images, "accuracy against entropy": chart},
        setup_text(cfg),
        repairs,
        claim_lines(claims, ev.alpha, ev.noninferiority_margin, ev.bootstrap_samples),
        common_lines(common) if common is not None else [],
    )
    text += tools.text
    (out_dir / "report.md").write_text(text)
    html = write_html(text, out_dir)
    return ReportFiles(
        tables, text, out_dir / "report.md", html, images, tools.images, claims, common, chart
    )


STORED_BESIDE = {"claims": CLAIMS_SCHEMA, "common_entropy": COMMON_ENTROPY_SCHEMA}
