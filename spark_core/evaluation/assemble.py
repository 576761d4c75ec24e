"""The whole evaluation report from the evaluation rows: its tables (to store as artifacts),
its Markdown, HTML and plots (written to a local folder). The task only stores and shows it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from spark_core.config import SAMPLED_POLICY, RunConfig
from spark_core.evaluation.plots import plot
from spark_core.evaluation.repairs import REPAIRS_SCHEMA, repair_table
from spark_core.evaluation.report import (
    ENTROPY_TESTS_SCHEMA,
    PAIRS_SCHEMA,
    SUMMARY_SCHEMA,
    USAGE_SCHEMA,
    markdown,
    summarize,
    write_html,
)
from spark_core.evaluation.tool_map import tool_report


@dataclass(frozen=True)
class ReportFiles:
    """The report: tables by name, in the order they are stored (``summary``, ``usage``,
    ``pairs``, ``entropy_tests``, ``repairs`` where tool calls were repaired, then the tool
    tables), the Markdown text and the files written."""

    tables: dict[str, tuple[pa.Table, pa.Schema]]
    text: str
    markdown: Path
    html: Path
    images: dict[str, Path]  # accuracy, entropy and usage plots
    tool_maps: dict[str, Path]  # policy -> its category x action heat map


def setup_text(cfg: RunConfig) -> str:
    """The report's opening paragraph: how the policies were decoded, what k and m are."""
    n = len(cfg.rollout.actions)
    return (
        f"Action decoding: **{cfg.evaluation.action_decoding}**; up to {cfg.evaluation.steps} "
        f"steps; `{SAMPLED_POLICY}` is the base model sampled at T = "
        f"{cfg.evaluation.sampling_temperature:g}, every other policy decodes greedily. "
        f"k = {n + 1} action names (the {n} actions and `answer`), m = {n} actions (tools and "
        "`cot`). Column meanings: README, *Evaluation and the report*."
    )


def build_report(cfg: RunConfig, rows: list[dict[str, Any]], out_dir: Path) -> ReportFiles:
    """Summaries, paired tests, repairs, tool productivity and tool maps of ``rows``, with
    ``report.md``, ``report.html`` and the PNGs written to ``out_dir``."""
    actions = cfg.rollout.actions
    summary, usage, pairs, tests = summarize(
        rows, actions, cfg.evaluation.bootstrap_samples, cfg.evaluation.seed
    )
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
    images = plot(summary, usage, out_dir)
    tools = tool_report(rows, actions, out_dir)  # productivity, tool_map, category_entropy
    tables.update(tools.tables)
    text = markdown(summary, usage, pairs, tests, images, setup_text(cfg), repairs) + tools.text
    (out_dir / "report.md").write_text(text)
    html = write_html(text, out_dir)
    return ReportFiles(tables, text, out_dir / "report.md", html, images, tools.images)
