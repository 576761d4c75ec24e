"""Tool productivity and the per-category tool map on hand-made evaluation rows, against
hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from spark_core.evaluation.assemble import build_report
from spark_core.evaluation.plots import grid
from spark_core.evaluation.productivity import overall_records, productivity, productivity_lines
from spark_core.evaluation.report import embed_images, summarize
from spark_core.evaluation.tool_map import conditional_entropy, tool_map, tool_report

ACTIONS = ["calculator", "python", "knowledge_search", "cot"]
H_THIRDS = -(2 / 3) * math.log2(2 / 3) - (1 / 3) * math.log2(1 / 3)  # 0.918 bits


def _row(policy, qid, category, correct, actions, tool_calls=0, tool_errors=0):
    return {
        "policy": policy,
        "question_id": qid,
        "category": category,
        "correct": correct,
        "no_answer": False,
        "steps": len(actions),
        "actions": actions,
        "action_names": [*ACTIONS, "answer"],
        "step_probs": [[] for _ in actions],
        "invalid_actions": actions.count("invalid"),
        "tool_calls": tool_calls,
        "tool_errors": tool_errors,
    }


ROWS = [
    _row("ppo", 1, "math", True, ["calculator", "calculator", "answer"], 2, 1),
    _row("ppo", 2, "math", False, ["cot", "answer"]),
    _row("ppo", 3, "law", True, ["knowledge_search", "cot", "answer"], 1, 0),
    _row("ppo", 4, "law", True, ["answer"]),
    _row("base", 1, "math", False, ["python", "answer"], 1, 1),
    _row("base", 2, "math", False, ["cot", "cot", "answer"]),
    _row("base", 3, "law", False, ["invalid", "answer"]),
    _row("base", 4, "law", True, ["cot"]),
]


def _cells(table):
    return {(r["policy"], r["category"]): r for r in table.to_pylist()}


def test_productivity_by_hand():
    table = productivity(ROWS)
    assert [(r["policy"], r["category"]) for r in table.to_pylist()] == [
        ("ppo", "overall"),
        ("ppo", "law"),
        ("ppo", "math"),
        ("base", "overall"),
        ("base", "law"),
        ("base", "math"),
    ]
    cell = _cells(table)
    figures = (
        "calls_per_question",
        "calls_per_correct",
        "tool_error_rate",
        "calls_on_correct_share",
        "with_tool_n",
        "with_tool_accuracy",
        "no_tool_n",
        "no_tool_accuracy",
    )
    expected = {
        # 3 calls on 4 questions, 3 correct; 1 of 3 calls failed; every call on a right answer
        ("ppo", "overall"): (0.75, 1.0, 1 / 3, 1.0, 2, 1.0, 2, 0.5),
        ("ppo", "math"): (1.0, 2.0, 0.5, 1.0, 1, 1.0, 1, 0.0),
        ("ppo", "law"): (0.5, 0.5, 0.0, 1.0, 1, 1.0, 1, 1.0),
        ("base", "overall"): (0.25, 1.0, 1.0, 0.0, 1, 0.0, 3, 1 / 3),
    }
    for key, values in expected.items():
        assert tuple(cell[key][f] for f in figures) == pytest.approx(values), key
    math_ = cell[("base", "math")]  # a call, nothing right: infinitely many calls per answer
    assert math_["calls_per_correct"] == math.inf and math_["tool_error_rate"] == 1.0
    law = cell[("base", "law")]  # no call at all: the per-call figures are undefined
    assert law["calls_per_question"] == 0.0 and law["calls_per_correct"] == 0.0
    assert math.isnan(law["tool_error_rate"]) and math.isnan(law["calls_on_correct_share"])
    assert law["with_tool_n"] == 0 and math.isnan(law["with_tool_accuracy"])
    assert (law["no_tool_n"], law["no_tool_accuracy"]) == (2, 0.5)

    lines = productivity_lines(table)
    overall = "| overall | ppo | 4 | 0.75 | 1.00 | 33.3% | 100.0% | 100.0% (2) | 50.0% (2) |"
    assert overall in lines
    assert "| math | base | 2 | 0.50 | ∞ | 100.0% | 0.0% | 0.0% (1) | 0.0% (1) |" in lines
    assert "| law | base | 2 | 0.00 | 0.00 | – | – | – (0) | 50.0% (2) |" in lines
    records = overall_records(table)  # JSON-safe for the Prefect table artifact
    assert [r["policy"] for r in records] == ["ppo", "base"]
    assert records[1]["calls_per_correct"] == 1.0
    assert overall_records(productivity(ROWS[4:5]))[0]["calls_per_correct"] == "∞"


def test_tool_map_counts_shares_and_entropy_by_hand():
    tmap, entropy = tool_map(ROWS, ACTIONS)
    categories, actions, shares = grid(tmap, "ppo")
    assert categories == ["law", "math"]
    assert actions == [*ACTIONS, "invalid"]  # configured order; invalid since base had one
    assert np.array(shares) == pytest.approx(
        np.array([[0, 0, 0.5, 0.5, 0], [2 / 3, 0, 0, 1 / 3, 0]])
    )
    base = np.array(grid(tmap, "base")[2])
    assert base == pytest.approx(np.array([[0, 0, 0, 0.5, 0.5], [0, 1 / 3, 0, 2 / 3, 0]]))
    counts = {(r["policy"], r["category"], r["action"]): r["count"] for r in tmap.to_pylist()}
    assert counts[("ppo", "math", "calculator")] == 2 and counts[("base", "law", "invalid")] == 1

    cell = _cells(entropy)
    expected = {
        ("ppo", "law"): (2, 1.0),
        ("ppo", "math"): (3, H_THIRDS),
        ("ppo", "overall"): (5, -2 * 0.4 * math.log2(0.4) - 0.2 * math.log2(0.2)),
        ("base", "law"): (1, 0.0),  # invalid is not a choice: cot only
        ("base", "math"): (3, H_THIRDS),
        ("base", "overall"): (4, -0.25 * math.log2(0.25) - 0.75 * math.log2(0.75)),
    }
    for key, (choices, bits) in expected.items():
        assert cell[key]["choices"] == choices and cell[key]["entropy_bits"] == pytest.approx(bits)
        assert cell[key]["normalized_entropy"] == pytest.approx(bits / 2)  # log2 of 4 actions
    assert conditional_entropy(entropy, "ppo") == pytest.approx((3 * H_THIRDS + 2 * 1.0) / 5)
    assert conditional_entropy(entropy, "base") == pytest.approx(3 * H_THIRDS / 4)
    # the same figure as the summary's pooled entropy of each policy x category
    summary, *_ = summarize(ROWS, ACTIONS, samples=20)
    for r in summary.to_pylist():
        mine = cell[(r["policy"], r["category"])]["entropy_bits"]
        assert mine == pytest.approx(r["entropy_bits"])


def test_tool_report_writes_a_heat_map_per_policy_and_the_sections(tmp_path):
    only_answers = _row("ppo", 5, "history", True, ["answer"])  # no choice: no entropy
    report = tool_report([*ROWS, only_answers], ACTIONS, tmp_path)
    assert set(report.images) == {"ppo", "base"}
    for path in report.images.values():
        assert path.parent == tmp_path and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert path.stat().st_size > 1000
    assert set(report.tables) == {"productivity", "tool_map", "category_entropy"}
    text = report.text
    assert "## Tool productivity" in text and "## Tool map per category" in text
    assert "| math | 0.92 (3) | 0.92 (3) |" in text  # entropy table: category x policy
    given = f"| H(action \\| category) | {(3 * H_THIRDS + 2) / 5:.2f} | {3 * H_THIRDS / 4:.2f} |"
    assert given in text
    assert "| math | 2 | 0 | 0 | 1 | 0 | 0.92 | 0.46 |" in text  # ppo's counts
    assert "| history | – (0) | – |" in text and "| history | 0 | 0 | 0 | 0 | 0 | – | – |" in text
    assert "![tool map base](tool_map_base.png)" in text
    inlined = embed_images(text, tmp_path)  # as in the Prefect artifact and report.html
    assert inlined.count("](data:image/png;base64,") == 2


def test_build_report_with_repairs_names_every_table(run_config, tmp_path):
    """With rollout.tool_retries the repairs table is stored too; every table keeps its name
    (the task builds its typed Report from them by name)."""
    cfg = run_config(
        f"rollout.actions={ACTIONS}".replace("'", ""),
        "rollout.tool_retries=1",
        "evaluation.bootstrap_samples=20",
    )
    rows = [
        {**r, "step_repairs": [1 if a == "python" else 0 for a in r["actions"]],
         "step_repaired": [a == "python" for a in r["actions"]]}
        for r in ROWS
    ]  # fmt: skip
    built = build_report(cfg, rows, tmp_path)
    assert list(built.tables) == [
        "summary",
        "usage",
        "pairs",
        "entropy_tests",
        "repairs",
        "productivity",
        "tool_map",
        "category_entropy",
    ]
    repaired = [r for r in built.tables["repairs"][0].to_pylist() if r["succeeded"]]
    assert [(r["policy"], r["tool"], r["succeeded"]) for r in repaired] == [("base", "python", 1)]
    assert built.markdown.read_text() == built.text and built.html.exists()
    assert built.text.startswith("# ") and "Action decoding: **" in built.text
    assert set(built.tool_maps) == {"ppo", "base"}
