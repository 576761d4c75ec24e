"""The paper's claims, each a pre-declared test with a verdict (``evaluation.claims``).

Every claim compares SPaRK's policy (``ppo``, PPO's adapter) with another policy on the same
questions by a paired hierarchical bootstrap (seeds, then questions: seeds.py) of a difference
d = figure(ppo) - figure(other):

- accuracy non-inferiority against base and SFT: d = accuracy difference, null bound
  -``noninferiority_margin`` (TOST-style: non-inferior when d's CI lies above -margin);
- tool-selection entropy above base, SFT and each base@T sampling baseline: d = common-state
  entropy difference (common_entropy.py), null bound 0.

The interval is d +- z SE with SE the standard deviation of the bootstrap replicates, and the
raw p the matching normal one: 2 (1 - Phi((d - bound) / SE)), so that p <= alpha exactly when
the (1 - alpha) interval lies above the bound (a one-sided test at alpha / 2, the
non-inferiority convention). Not the percentile interval: with few discordant questions the
replicates of an accuracy difference cannot fall below 0 (one question won by SPaRK and none
lost: every replicate is >= 0), and a percentile CI of [0, +21] would call 14 questions
non-inferior. For the same reason the accuracy claims carry an Agresti–Min-style adjustment:
one pseudo-question won by each side is added to every seed before the bootstrap, so a
difference measured on no discordant question is never read as exact. Holm adjusts the family
of claims that ran. Verdicts: *supported* when the Holm-adjusted p <= alpha; *not supported*
when the (1 - alpha) CI lies at or below the bound (the data exclude the claim); else
*inconclusive at this size*, with the questions a decision would need (stats.questions_needed).
A claim whose policies or common states are absent is *not run* and stays out of the family;
one with fewer than ``MIN_QUESTIONS`` paired questions is shown, not tested. An entropy claim
pairs only the states both policies have an entropy for (not all mass on ``answer``)."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from statistics import NormalDist
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from spark_core.evaluation.common_entropy import common_groups, mean_entropy
from spark_core.evaluation.policies import TESTED
from spark_core.evaluation.seeds import Groups, paired_differences, seed_groups
from spark_core.evaluation.stats import accuracy, holm, questions_needed
from spark_core.str_enum import StrEnum

if TYPE_CHECKING:
    from spark_core.config import EvaluationConfig

SAMPLED_PREFIX = "base@"  # base@0.7, base@1, ...: the base model sampled at a temperature


class Verdict(StrEnum):
    """A claim's verdict: the ``verdict`` column of ``eval_claims`` (module docstring)."""

    SUPPORTED = "supported"
    NOT_SUPPORTED = "not supported"
    INCONCLUSIVE = "inconclusive at this size"
    NOT_RUN = "not run"


# claim -> (the claim in the paper's words, the policy SPaRK is compared with, the figure)
CLAIMS: dict[str, tuple[str, str, str]] = {
    "accuracy_noninferior_base": (
        "SPaRK's accuracy is competitive with the base model's",
        "base",
        "accuracy",
    ),
    "accuracy_noninferior_sft": ("SPaRK's accuracy is competitive with SFT's", "sft", "accuracy"),
    "entropy_above_base": (
        "SPaRK's tool-selection entropy is significantly higher than the base model's",
        "base",
        "entropy",
    ),
    "entropy_above_sft": (
        "SPaRK's tool-selection entropy is significantly higher than SFT's",
        "sft",
        "entropy",
    ),
    "entropy_above_sampling": (
        "SPaRK's tool-selection entropy is more than high-temperature sampling gives",
        SAMPLED_PREFIX + "T",
        "entropy",
    ),
}
_F = pa.float64()
CLAIMS_SCHEMA = pa.schema(
    [
        pa.field("claim_id", pa.string(), nullable=False),  # evaluation.claims entry
        pa.field("claim", pa.string(), nullable=False),  # in the paper's words
        pa.field("test", pa.string(), nullable=False),
        pa.field("policy_a", pa.string(), nullable=False),  # ppo (TESTED)
        pa.field("policy_b", pa.string(), nullable=False),
        pa.field("bound", _F, nullable=False),  # the null's bound on d: -margin or 0
        pa.field("questions", pa.int64(), nullable=False),  # paired questions; 0: not run
        pa.field("estimate", _F, nullable=False),  # d = figure(a) - figure(b); NaN: not run
        pa.field("ci_low", _F, nullable=False),  # (1 - alpha) CI of d: d +- z SE (bootstrap)
        pa.field("ci_high", _F, nullable=False),
        pa.field("p_value", _F, nullable=False),  # raw; NaN: not run
        pa.field("p_holm", _F, nullable=False),  # Holm-adjusted over the claims that ran
        pa.field("verdict", pa.string(), nullable=False),  # Verdict
        pa.field("questions_needed", _F, nullable=False),  # inconclusive only; inf: no size
        pa.field("note", pa.string(), nullable=False),
    ]
)


@dataclass(frozen=True)
class Comparison:
    """A paired bootstrap comparison d = figure(a) - figure(b) against a null bound."""

    estimate: float
    ci_low: float
    ci_high: float
    p_value: float  # one-sided (d > bound), doubled
    se: float  # standard deviation of the bootstrap replicates
    questions: int
    centre: float | None = None  # the adjusted d the interval is centred on (None: estimate)
    units: int | None = None  # the questions the SE is of (pseudo-questions counted)


PSEUDO = (-1, -2)  # the pseudo-questions' ids: the first won by A, the second by B
MIN_QUESTIONS = 10  # fewer paired questions: no test (inconclusive, out of the Holm family)


def with_pseudo_pair(a: Groups, b: Groups) -> tuple[Groups, Groups]:
    """Both policies' correctness with one pseudo-question won by each side, in every seed
    (the accuracy claims' adjustment, module docstring)."""
    won, lost = PSEUDO
    return (
        {s: {**g, won: True, lost: False} for s, g in a.items()},
        {s: {**g, won: False, lost: True} for s, g in b.items()},
    )


def compare(
    a: Groups,
    b: Groups,
    statistic,
    bound: float,
    samples: int,
    seed: int,
    level: float = 0.95,
    pseudo_pair: bool = False,
) -> Comparison:
    """The paired hierarchical bootstrap of d against its null bound (module docstring);
    ``pseudo_pair``: the accuracy adjustment."""
    estimate, _, n = paired_differences(a, b, statistic, 0, seed)  # as observed
    if pseudo_pair:  # the interval and p are centred on the adjusted difference
        a, b = with_pseudo_pair(a, b)
    centre, replicates, units = paired_differences(a, b, statistic, samples, seed)
    nan = float("nan")
    if n < MIN_QUESTIONS or len(replicates) < 2 or math.isnan(centre):
        # a bootstrap of a handful of questions has (nearly) nothing to vary: its spread says
        # nothing, and a zero SE would read as certainty
        return Comparison(estimate, nan, nan, nan, nan, n, centre, units)
    se = statistics.stdev(replicates)
    z = NormalDist().inv_cdf((1 + level) / 2)
    if se > 0:  # erfc: no underflow to 0 far in the tail
        p = min(1.0, math.erfc((centre - bound) / (se * math.sqrt(2))))
    else:  # every replicate equal on >= MIN_QUESTIONS questions: d is what it is
        p = 0.0 if centre > bound else 1.0
    return Comparison(estimate, centre - z * se, centre + z * se, p, se, n, centre, units)


def verdict(c: Comparison, p_holm: float, bound: float, alpha: float) -> Verdict:
    """supported / not supported / inconclusive at this size (module docstring)."""
    if p_holm <= alpha:
        return Verdict.SUPPORTED
    if c.ci_high <= bound:
        return Verdict.NOT_SUPPORTED
    return Verdict.INCONCLUSIVE


def needed(c: Comparison, bound: float, alpha: float, family: int, power: float) -> float:
    """Questions for a decision at the observed effect and variance (the adjusted d and the
    questions its SE is of): towards *supported* at the strictest Holm level alpha /
    (2 family) when d is above the bound, towards *not supported* at alpha / 2 (the
    (1 - alpha) interval) when it is below."""
    d = c.estimate if c.centre is None else c.centre
    level = alpha / (2 * family) if d > bound else alpha / 2
    return questions_needed(d, c.se, c.units or c.questions, bound, level, power)


def _plan(
    ev: EvaluationConfig, rows: list[dict[str, Any]], common: list[dict[str, Any]] | None
) -> list[dict]:
    """One entry per claim row: its groups and statistic, or a reason it cannot run."""
    by_policy = {
        p: [r for r in rows if r["policy"] == p] for p in dict.fromkeys(r["policy"] for r in rows)
    }
    correct = {p: seed_groups(rs, lambda r: r["correct"]) for p, rs in by_policy.items()}
    entropy = common_groups(common) if common else {}
    plan = []
    for claim_id in ev.claims:
        words, other, figure = CLAIMS[claim_id]
        if figure == "accuracy":
            plan.append(_entry(claim_id, words, other, figure, correct, ev, "evaluation rows"))
            continue
        others = [other]
        if other.startswith(SAMPLED_PREFIX):
            others = [p for p in (entropy or by_policy) if p.startswith(SAMPLED_PREFIX)] or others
        for o in others:
            entry = _entry(claim_id, words, o, figure, entropy, ev, "common states")
            if not common:
                entry["note"] = "no common-state distributions were computed"
            if o.startswith(SAMPLED_PREFIX) and "reason" not in entry:
                entry["note"] = _accuracy_note(correct, o, ev)
            plan.append(entry)
    return plan


def _entry(claim_id, words, other, figure, groups, ev, where: str) -> dict:
    entry = {"claim_id": claim_id, "claim": words, "policy_b": other, "figure": figure}
    entry["bound"] = -ev.noninferiority_margin if figure == "accuracy" else 0.0
    entry["note"] = ""
    missing = [p for p in (TESTED, other) if p not in groups]
    if missing:
        entry["reason"] = entry["note"] = f"no `{'`, `'.join(missing)}` in the {where}"
        return entry
    entry["a"], entry["b"] = groups[TESTED], groups[other]
    if figure == "entropy":  # pair only the states both have an entropy for
        entry["a"], entry["b"] = _finite_pairs(entry["a"], entry["b"])
    entry["statistic"] = accuracy if figure == "accuracy" else mean_entropy
    return entry


def _finite_pairs(a: Groups, b: Groups) -> tuple[Groups, Groups]:
    """Both groups on the questions every seed of both has a (non-NaN) value for."""
    kept = {
        q
        for q in next(iter(a.values()), {})
        if all(q in g and not math.isnan(g[q]) for groups in (a, b) for g in groups.values())
    }
    return (
        {s: {q: v for q, v in g.items() if q in kept} for s, g in a.items()},
        {s: {q: v for q, v in g.items() if q in kept} for s, g in b.items()},
    )


def _accuracy_note(correct: dict[str, Groups], sampled: str, ev: EvaluationConfig) -> str:
    """Where a base@T stood in accuracy, and whether it counts as *at the same accuracy*: not
    below SPaRK's by more than the margin as far as the data show (the 95% CI of
    acc(base@T) - acc(ppo) reaches -margin or above)."""
    if TESTED not in correct or sampled not in correct:
        return f"no accuracy of `{sampled}` or `{TESTED}` to compare"
    c = compare(
        correct[sampled],
        correct[TESTED],
        accuracy,
        0.0,
        ev.bootstrap_samples,
        ev.seed,
        pseudo_pair=True,
    )
    same = c.ci_high >= -ev.noninferiority_margin
    return (
        f"{sampled} accuracy − {TESTED}'s: {100 * c.estimate:+.1f} points (95% CI "
        f"{100 * c.ci_low:+.1f} to {100 * c.ci_high:+.1f}): "
        + ("at the same accuracy" if same else "less accurate by more than the margin")
    )


def _test_text(entry: dict, margin: float) -> str:
    if entry["figure"] == "accuracy":
        return (
            f"non-inferiority, margin {100 * margin:g} points: paired bootstrap (seeds, "
            f"questions) of acc({TESTED}) − acc({entry['policy_b']})"
        )
    return (
        f"superiority: paired bootstrap (seeds, questions) of common-state H({TESTED}) − "
        f"H({entry['policy_b']}), bits"
    )


def claims_table(
    ev: EvaluationConfig, rows: list[dict[str, Any]], common: list[dict[str, Any]] | None
) -> pa.Table:
    """The claims of ``ev.claims`` (an EvaluationConfig) on the evaluation rows and the
    common-state distributions (None: not computed), one row per comparison."""
    plan = _plan(ev, rows, common)
    ran = [e for e in plan if "reason" not in e]
    for e in ran:
        e["c"] = compare(  # the (1 - alpha) interval: p <= alpha exactly when it clears the bound
            e["a"],
            e["b"],
            e["statistic"],
            e["bound"],
            ev.bootstrap_samples,
            ev.seed,
            level=1 - ev.alpha,
            pseudo_pair=e["figure"] == "accuracy",
        )
    ran = [e for e in ran if not math.isnan(e["c"].p_value)]
    for e in plan:
        if "c" in e and math.isnan(e["c"].p_value):
            if 0 < e["c"].questions < MIN_QUESTIONS:
                e["few"] = True
                e["note"] = f"fewer than {MIN_QUESTIONS} paired questions: not tested"
            else:
                e["reason"] = e["note"] = "no paired questions with a value"
    for e, p in zip(ran, holm([e["c"].p_value for e in ran]), strict=True):
        e["p_holm"] = p
    out = []
    for e in plan:
        nan = float("nan")
        row = {
            "claim_id": e["claim_id"],
            "claim": e["claim"],
            "test": _test_text(e, ev.noninferiority_margin),
            "policy_a": TESTED,
            "policy_b": e["policy_b"],
            "bound": e["bound"],
            "note": e["note"],
        }
        if "reason" in e:
            out.append(row | _not_run())
            continue
        if e.get("few"):  # shown, never tested: out of the Holm family
            estimate = {"questions": e["c"].questions, "estimate": e["c"].estimate}
            out.append(row | _not_run() | estimate | {"verdict": Verdict.INCONCLUSIVE})
            continue
        c, p_holm = e["c"], e["p_holm"]
        decided = verdict(c, p_holm, e["bound"], ev.alpha)
        inconclusive = decided == Verdict.INCONCLUSIVE
        n = needed(c, e["bound"], ev.alpha, len(ran), ev.power) if inconclusive else nan
        out.append(
            row
            | {
                "questions": c.questions,
                "estimate": c.estimate,
                "ci_low": c.ci_low,
                "ci_high": c.ci_high,
                "p_value": c.p_value,
                "p_holm": p_holm,
                "verdict": decided,
                "questions_needed": n,
            }
        )
    return pa.Table.from_pylist(out, schema=CLAIMS_SCHEMA)


def _not_run() -> dict:
    nan = float("nan")
    return {
        "questions": 0,
        "estimate": nan,
        "ci_low": nan,
        "ci_high": nan,
        "p_value": nan,
        "p_holm": nan,
        "verdict": Verdict.NOT_RUN,
        "questions_needed": nan,
    }


def _estimate(r: dict) -> str:
    if math.isnan(r["estimate"]):
        return "–"
    if r["claim_id"].startswith("accuracy"):
        return (
            f"{100 * r['estimate']:+.1f} points ({100 * r['ci_low']:+.1f} to "
            f"{100 * r['ci_high']:+.1f})"
        )
    return f"{r['estimate']:+.3f} bits ({r['ci_low']:+.3f} to {r['ci_high']:+.3f})"


def _verdict_text(r: dict) -> str:
    if r["verdict"] != Verdict.INCONCLUSIVE:
        return f"**{r['verdict']}**"
    n = r["questions_needed"]
    if math.isinf(n):
        return f"**{Verdict.INCONCLUSIVE}** (no effect observed: no size decides it)"
    if math.isnan(n):
        return f"**{Verdict.INCONCLUSIVE}**"
    return f"**{Verdict.INCONCLUSIVE}** (≈ {int(n):,} questions needed, now {r['questions']})"


def claim_lines(table: pa.Table, alpha: float, margin: float, samples: int) -> list[str]:
    """The claims section at the top of the report (``samples``: bootstrap resamples)."""
    level = f"{1 - alpha:.0%}"
    z = NormalDist().inv_cdf(1 - alpha / 2)
    lines = [
        "## Claims",
        "",
        "Pre-declared in `evaluation.claims`, Holm-adjusted over the claims that ran (family-wise "
        f"α = {alpha:g}). Each is a paired bootstrap over training seeds and questions of the "
        f"difference SPaRK − other ({level} CI: estimate ± {z:.2f} bootstrap SE; accuracy with "
        "one pseudo-question won by each side): accuracy non-inferiority with a margin of "
        f"{100 * margin:g} points, entropy on the common step-1 states. *supported*: Holm p ≤ "
        f"α; *not supported*: the {level} CI excludes the claim; otherwise *inconclusive at this "
        "size* with the questions a decision would need (normal approximation, power "
        "`evaluation.power`). Definitions: README, *Claims*.",
        "",
        f"| claim | test | estimate ({level} CI) | p | Holm p | verdict | note |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in table.to_pylist():
        p, adjusted = (
            ("–", "–")
            if math.isnan(r["p_value"])
            else (f"{r['p_value']:.3g}", f"{r['p_holm']:.3g}")
        )
        lines.append(
            f"| {r['claim']} (vs {r['policy_b']}) | {r['test']} | {_estimate(r)} | {p} | "
            f"{adjusted} | {_verdict_text(r)} | {r['note'] or '–'} |"
        )
    return [*lines, ""]
