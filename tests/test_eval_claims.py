"""The claims table, Holm, non-inferiority, seed pooling, common-state entropy and
Miller–Madow on hand-made rows, against hand-computed values."""

from __future__ import annotations

import math

import pytest

from spark_core.config import EvaluationConfig
from spark_core.evaluation.claims import (
    Comparison,
    Verdict,
    claim_lines,
    claims_table,
    verdict,
)
from spark_core.evaluation.common_entropy import common_entropy, state_entropy
from spark_core.evaluation.report import summarize
from spark_core.evaluation.seeds import hierarchical_bootstrap, seed_groups
from spark_core.evaluation.stats import (
    accuracy,
    bootstrap_stat,
    holm,
    miller_madow_bits,
    questions_needed,
)

ACTIONS = ["calculator", "python", "knowledge_search", "cot"]
NAMES = [*ACTIONS, "answer"]


def _row(policy, qid, correct, seed=-1, actions=("cot", "answer")):
    return {
        "policy": policy,
        "seed": seed,
        "question_id": qid,
        "category": "math" if qid % 2 else "law",
        "correct": correct,
        "no_answer": False,
        "steps": len(actions),
        "actions": list(actions),
        "action_names": NAMES,
        "step_probs": [[0.25, 0.25, 0.25, 0.25, 0.0] for _ in actions],
        "invalid_actions": 0,
        "tool_calls": 0,
        "tool_errors": 0,
    }


def _pair(n, ppo_loses, ppo_wins):
    """n questions: base right on the first half; ppo the same except it loses
    ``ppo_loses`` questions base gets right and wins ``ppo_wins`` base gets wrong."""
    base = [q < n // 2 for q in range(n)]
    ppo = list(base)
    for q in range(ppo_loses):
        ppo[q] = False
    for q in range(ppo_wins):
        ppo[n // 2 + q] = True
    return [_row("base", q, c) for q, c in enumerate(base)] + [
        _row("ppo", q, c) for q, c in enumerate(ppo)
    ]


def _cfg(claims, samples=1000, **kw):
    return EvaluationConfig(claims=claims, bootstrap_samples=samples, **kw)


def test_holm_on_hand_made_p_values():
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> monotone
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm([0.01]) == [0.01] and holm([]) == []


def test_miller_madow_on_a_known_distribution():
    # counts (2, 1, 1): plug-in 1.5 bits, m_hat = 3, N = 4: + 2 / (8 ln 2) = 0.36067 bits
    assert miller_madow_bits([2, 1, 1]) == pytest.approx(1.5 + 2 / (8 * math.log(2)))
    assert miller_madow_bits([2, 1, 1]) == pytest.approx(1.86067, abs=1e-5)
    assert miller_madow_bits([4, 0]) == 0.0  # one action seen: no correction
    assert miller_madow_bits([]) == 0.0


def test_questions_needed_by_the_normal_approximation():
    # n ((z_.975 + z_.8) se / effect)^2 = 100 (2.80158 * 0.025 / 0.05)^2 = 196.2 -> 197
    assert questions_needed(0.05, 0.025, 100, 0.0, 0.025, 0.8) == 197
    assert questions_needed(-0.05, 0.025, 100, 0.0, 0.025, 0.8) == 197  # towards "not"
    assert questions_needed(0.0, 0.025, 100, 0.0, 0.025, 0.8) == math.inf


def test_non_inferiority_on_both_sides_of_the_margin():
    cfg = _cfg(["accuracy_noninferior_base"], samples=500)
    # identical outcomes on 100 questions: no discordant question says the discordance rate
    # is below ~3% (rule of three), not that d = 0 exactly: the pseudo-pair keeps it open
    same = claims_table(cfg, _pair(100, 0, 0), None).to_pylist()[0]
    assert same["estimate"] == 0.0 and same["ci_low"] < -0.02 < 0.02 < same["ci_high"]
    assert same["verdict"] == Verdict.INCONCLUSIVE
    many = claims_table(cfg, _pair(2000, 0, 0), None).to_pylist()[0]  # 2000: decided
    assert -0.02 < many["ci_low"] < 0 and many["verdict"] == Verdict.SUPPORTED
    # the demo's case: 14 questions, SPaRK alone right on one. Every percentile-bootstrap
    # replicate is >= 0 ([0, +21] points: "non-inferior"); the normal interval is not
    one = claims_table(cfg, _pair(14, 0, 1), None).to_pylist()[0]
    assert one["estimate"] == pytest.approx(1 / 14)
    assert one["ci_low"] < -0.02 and one["verdict"] == Verdict.INCONCLUSIVE
    # 2000 questions, d = -1 point with se ~0.32 points: the CI is inside the margin
    inside = claims_table(cfg, _pair(2000, 30, 10), None).to_pylist()[0]
    assert inside["estimate"] == pytest.approx(-0.01)
    assert -0.02 < inside["ci_low"] < -0.01 < inside["ci_high"] < 0
    assert inside["verdict"] == Verdict.SUPPORTED and inside["p_holm"] <= 0.05
    # d = -3 points: the whole CI is below -margin
    outside = claims_table(cfg, _pair(2000, 70, 10), None).to_pylist()[0]
    assert outside["estimate"] == pytest.approx(-0.03) and outside["ci_high"] < -0.02
    assert outside["verdict"] == Verdict.NOT_SUPPORTED and math.isnan(outside["questions_needed"])
    # 100 questions, d = -1 point: the CI spans the margin; more questions would decide
    small = claims_table(cfg, _pair(100, 3, 2), None).to_pylist()[0]
    assert small["ci_low"] < -0.02 < small["ci_high"] and small["verdict"] == Verdict.INCONCLUSIVE
    se = (small["ci_high"] - small["ci_low"]) / (2 * 1.96)  # ~ the bootstrap's sd
    expected = 100 * ((1.95996 + 0.84162) * se / 0.01) ** 2
    assert small["questions_needed"] == pytest.approx(expected, rel=0.25)
    assert small["questions_needed"] > 1000


def test_verdict_wording_for_each_case():
    c = Comparison(0.1, 0.02, 0.18, 0.004, 0.04, 50)
    assert verdict(c, 0.012, 0.0, 0.05) == Verdict.SUPPORTED
    assert verdict(c, 0.12, 0.0, 0.05) == Verdict.INCONCLUSIVE  # Holm took it above alpha
    below = Comparison(-0.1, -0.18, -0.02, 1.0, 0.04, 50)
    assert verdict(below, 1.0, 0.0, 0.05) == Verdict.NOT_SUPPORTED
    # a margin the CI does not exclude
    assert verdict(below, 1.0, -0.2, 0.05) == Verdict.INCONCLUSIVE
    # without sft nor common states: not run, out of the Holm family
    cfg = _cfg(["accuracy_noninferior_base", "accuracy_noninferior_sft", "entropy_above_base"])
    table = claims_table(cfg, _pair(100, 3, 2), None).to_pylist()
    assert [r["verdict"] for r in table] == [Verdict.INCONCLUSIVE, Verdict.NOT_RUN, Verdict.NOT_RUN]
    assert table[1]["note"] == "no `sft` in the evaluation rows"
    assert table[2]["note"] == "no common-state distributions were computed"
    assert table[0]["p_holm"] == table[0]["p_value"]  # a family of one
    assert math.isnan(table[1]["p_value"]) and table[1]["questions"] == 0
    text = "\n".join(claim_lines(claims_table(cfg, _pair(100, 3, 2), None), 0.05, 0.02, 1000))
    assert text.startswith("## Claims")
    n = int(table[0]["questions_needed"])
    assert f"**{Verdict.INCONCLUSIVE}** (≈ {n:,} questions needed, now 100)" in text
    assert text.count(f"**{Verdict.NOT_RUN}**") == 2


def _common(policy, probs, n=30, seed=-1):
    return [
        {
            "policy": policy,
            "seed": seed,
            "question_id": q,
            "category": "math",
            "action_names": NAMES,
            "probs": probs,
        }
        for q in range(n)
    ]


def test_common_state_entropy_claims_and_the_sampling_rows():
    uniform = [0.2, 0.2, 0.2, 0.2, 0.2]  # without answer: 4 x 0.25 = 2 bits
    peaked = [0.9, 0.0, 0.0, 0.0, 0.1]  # without answer: all on calculator = 0 bits
    assert state_entropy(_common("x", uniform)[0]) == pytest.approx(2.0)
    assert math.isnan(state_entropy(_common("x", [0, 0, 0, 0, 1.0])[0]))
    common = (
        _common("ppo", uniform, seed=0)
        + _common("ppo", uniform, seed=1)
        + _common("base", peaked)
        + _common("base@1.3", uniform)
    )
    table = common_entropy(common, samples=200).to_pylist()
    ppo = [r for r in table if r["policy"] == "ppo"]
    assert [r["seed"] for r in ppo] == [-1, 0, 1] and ppo[0]["questions"] == 30
    assert ppo[0]["entropy_bits"] == pytest.approx(2.0)
    assert ppo[0]["normalized_entropy"] == pytest.approx(1.0)
    rows = [_row(p, q, q < 15, s) for p, s in (("ppo", 0), ("ppo", 1)) for q in range(30)]
    rows += [_row("base", q, q < 15) for q in range(30)]
    rows += [_row("base@1.3", q, q < 3) for q in range(30)]  # 10% vs ppo's 50%
    cfg = _cfg(["entropy_above_base", "entropy_above_sampling"], samples=300)
    claims = claims_table(cfg, rows, common).to_pylist()
    assert [(r["policy_b"], r["verdict"]) for r in claims] == [
        ("base", Verdict.SUPPORTED),
        ("base@1.3", Verdict.NOT_SUPPORTED),  # equal entropy: d = 0 in every resample
    ]
    assert claims[0]["estimate"] == pytest.approx(2.0) and claims[0]["questions"] == 30
    assert claims[1]["questions_needed"] != claims[1]["questions_needed"]  # NaN: decided
    assert claims[1]["note"].startswith("base@1.3 accuracy − ppo's: -40.0 points")
    assert claims[1]["note"].endswith("less accurate by more than the margin")


def test_seed_pooling_and_the_hierarchical_interval():
    # ppo: seed 0 right on 40 of 50 questions, seed 1 on 20: pooled accuracy 0.6
    rows = [_row("ppo", q, q < 40, 0) for q in range(50)]
    rows += [_row("ppo", q, q < 20, 1) for q in range(50)]
    rows += [_row("base", q, q < 30) for q in range(50)]
    summary, _, pairs, tests = summarize(rows, ACTIONS, samples=500, seed=3)
    overall = [r for r in summary.to_pylist() if r["category"] == "overall"]
    got = {(r["policy"], r["seed"]): (r["n"], r["accuracy"]) for r in overall}
    assert got == {
        ("ppo", -1): (50, pytest.approx(0.6)),
        ("ppo", 0): (50, pytest.approx(0.8)),
        ("ppo", 1): (50, pytest.approx(0.4)),
        ("base", -1): (50, pytest.approx(0.6)),
    }
    pooled = next(r for r in overall if r["policy"] == "ppo" and r["seed"] == -1)
    # the question-only bootstrap of the per-question seed means ignores the seeds' 0.8/0.4
    means = [1.0] * 20 + [0.5] * 20 + [0.0] * 10
    lo, hi = bootstrap_stat(means, lambda v: sum(v) / len(v), 500, 3)
    assert pooled["ci_high"] - pooled["ci_low"] > 1.5 * (hi - lo)
    assert pooled["ci_low"] < 0.45 and pooled["ci_high"] > 0.75
    # one seed: the hierarchical bootstrap is the plain question bootstrap, draw for draw
    one = seed_groups([r for r in rows if r["seed"] == 0], lambda r: r["correct"])
    correct = [q < 40 for q in range(50)]
    assert hierarchical_bootstrap(one, accuracy, 300, 5) == bootstrap_stat(
        correct, accuracy, 300, 5
    )
    # McNemar and the entropy tests run once per seed: no seed's rows are dropped
    assert [(r["seed_a"], r["accuracy_a"]) for r in pairs.to_pylist()] == [(0, 0.8), (1, 0.4)]
    assert {(r["seed_a"], r["seed_b"]) for r in tests.to_pylist()} == {(0, -1), (1, -1)}


def test_category_entropy_has_a_ci_and_the_miller_madow_value():
    from spark_core.evaluation.tool_map import CONDITIONAL, conditional_entropy, tool_map

    rows = [
        _row("ppo", 1, True, actions=("calculator", "calculator", "answer")),
        _row("ppo", 3, False, actions=("cot", "answer")),
        _row("ppo", 2, True, actions=("knowledge_search", "cot", "answer")),
    ]
    _, entropy = tool_map(rows, ACTIONS, samples=200)
    cell = {r["category"]: r for r in entropy.to_pylist()}
    h_thirds = -(2 / 3) * math.log2(2 / 3) - (1 / 3) * math.log2(1 / 3)
    math_row = cell["math"]  # calculator 2, cot 1: N = 3, m_hat = 2
    assert (math_row["choices"], math_row["actions_seen"]) == (3, 2)
    assert math_row["entropy_bits"] == pytest.approx(h_thirds)
    assert math_row["entropy_mm_bits"] == pytest.approx(h_thirds + 1 / (6 * math.log(2)))
    assert math_row["entropy_ci_low"] <= math_row["entropy_bits"] <= math_row["entropy_ci_high"]
    law = cell["law"]  # knowledge_search 1, cot 1: 1 bit + 1 / (4 ln 2)
    assert law["entropy_mm_bits"] == pytest.approx(1.0 + 1 / (4 * math.log(2)))
    given = cell[CONDITIONAL]  # weighted by the categories' choices, 3 and 2 of 5
    assert given["entropy_bits"] == pytest.approx((3 * h_thirds + 2) / 5)
    assert given["entropy_bits"] == pytest.approx(conditional_entropy(entropy, "ppo"))
    mm = (3 * math_row["entropy_mm_bits"] + 2 * law["entropy_mm_bits"]) / 5
    assert given["entropy_mm_bits"] == pytest.approx(mm)
    assert given["entropy_ci_low"] <= given["entropy_bits"] <= given["entropy_ci_high"]


def test_build_report_puts_the_claims_on_top(run_config, tmp_path):
    from spark_core.evaluation.assemble import build_report

    cfg = run_config(
        f"rollout.actions={ACTIONS}".replace("'", ""), "evaluation.bootstrap_samples=200"
    )
    rows = [_row(p, q, q < 10, s) for p, s in (("ppo", 0), ("ppo", 1)) for q in range(20)]
    rows += [_row("base", q, q < 12) for q in range(20)]
    common = _common("ppo", [0.2] * 5, 20, 0) + _common("ppo", [0.2] * 5, 20, 1)
    common += _common("base", [0.9, 0, 0, 0, 0.1], 20)
    built = build_report(cfg, rows, tmp_path, common)
    text = built.text
    assert text.index("## Claims") < text.index("## Overall") < text.index("## Common-state")
    assert "| ppo (seed 1) |" in text and "| ppo (seed 0) | base |" in text
    assert "![accuracy against entropy](accuracy_vs_entropy.png)" in text
    assert built.accuracy_entropy.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    claims = built.claims.to_pylist()
    assert [r["claim_id"] for r in claims] == list(cfg.evaluation.claims)
    verdicts = {(r["claim_id"], r["verdict"]) for r in claims}
    assert ("entropy_above_base", Verdict.SUPPORTED) in verdicts
    assert ("accuracy_noninferior_sft", Verdict.NOT_RUN) in verdicts
    assert ("entropy_above_sampling", Verdict.NOT_RUN) in verdicts  # no base@T policy
    assert built.common_entropy.num_rows == 4  # ppo pooled and per seed, base


def test_too_few_states_are_shown_not_tested_and_nan_states_are_not_paired():
    uniform = [0.2, 0.2, 0.2, 0.2, 0.2]
    peaked = [0.9, 0.0, 0.0, 0.0, 0.1]
    cfg = _cfg(["entropy_above_base"], samples=300)
    # one state, two seeds: only the seed draw varies; the old normal test read its near-zero
    # spread as p ~ 1e-12 "supported"
    one = _common("ppo", uniform, n=1, seed=0) + _common("ppo", peaked, n=1, seed=1)
    one += _common("base", peaked, n=1)
    row = claims_table(cfg, [], one).to_pylist()[0]
    assert row["verdict"] == Verdict.INCONCLUSIVE and math.isnan(row["p_value"])
    assert row["questions"] == 1 and row["note"].startswith("fewer than 10 paired questions")
    # a state whose mass is all on `answer` has no entropy: left out of both sides' pairs
    answer_only = [0.0, 0.0, 0.0, 0.0, 1.0]
    common = _common("ppo", uniform, n=20) + _common("base", peaked, n=20)
    common[0]["probs"] = answer_only  # ppo's state 0
    common[20 + 1]["probs"] = answer_only  # base's state 1
    paired = claims_table(cfg, [], common).to_pylist()[0]
    assert paired["questions"] == 18 and paired["estimate"] == pytest.approx(2.0)
    # far in the tail the p-value is tiny, never a printed 0; alpha sets the interval's level
    spread = [[0.25 + 0.01 * (q % 5), 0.25, 0.25, 0.25 - 0.01 * (q % 5), 0.0] for q in range(40)]
    noisy = [r | {"probs": spread[r["question_id"]]} for r in _common("ppo", uniform, n=40)]
    far = claims_table(cfg, [], noisy + _common("base", peaked, n=40)).to_pylist()[0]
    assert far["verdict"] == Verdict.SUPPORTED and 0.0 <= far["p_value"] < 1e-6
    wide = claims_table(
        _cfg(["entropy_above_base"], samples=300, alpha=0.01),
        [],
        noisy + _common("base", peaked, n=40),
    ).to_pylist()[0]
    assert wide["ci_high"] - wide["ci_low"] > far["ci_high"] - far["ci_low"]  # 99% vs 95%
    text = "\n".join(claim_lines(claims_table(cfg, [], one), 0.01, 0.02, 300))
    assert "estimate (99% CI)" in text and "± 2.58 bootstrap SE" in text
