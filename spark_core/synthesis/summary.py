"""What a synthesis run did: action usage and its entropy, viable rate, judge score
distribution and tool-call repairs (``rollout.tool_retries``) per tool, fallback rate, judge
failure rate and the questions it stopped, judge tokens and estimated cost."""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from spark_core.config import RunConfig
from spark_core.labeling.rewards import spread, variance_shares
from spark_core.labeling.trajectories import label
from spark_core.metrics import entropy_bits, normalized_entropy, quantile
from spark_core.models.judge.scorers import JudgeStatus
from spark_core.models.prices import JudgeRates, model_rates, rates_for
from spark_core.protocol import parse_step
from spark_core.synthesis.agreement import agreement
from spark_core.synthesis.selection import is_viable
from spark_core.tools.base import ToolStatus

ACTIONS_SCHEMA = pa.schema(
    [
        pa.field("action", pa.string(), nullable=False),
        pa.field("selected", pa.int64(), nullable=False),
        pa.field("selected_share", pa.float64(), nullable=False),
        pa.field("candidates", pa.int64(), nullable=False),
        pa.field("viable_rate", pa.float64(), nullable=False),
        pa.field("tool_error_rate", pa.float64(), nullable=False),
        pa.field("score_mean", pa.float64()),
        pa.field("score_std", pa.float64()),
        pa.field("score_p10", pa.float64()),
        pa.field("score_p50", pa.float64()),
        pa.field("score_p90", pa.float64()),
        # candidates whose failed call was repaired (rollout.tool_retries), of those tried
        pa.field("repairs_attempted", pa.int64(), nullable=False),
        pa.field("repairs_succeeded", pa.int64(), nullable=False),
        pa.field("repair_rate", pa.float64()),  # succeeded / attempted; null: none tried
    ]
)
RUN_SCHEMA = pa.schema(
    [
        pa.field("questions", pa.int64(), nullable=False),
        pa.field("steps", pa.int64(), nullable=False),
        pa.field("entropy_bits", pa.float64(), nullable=False),
        pa.field("normalized_entropy", pa.float64(), nullable=False),
        pa.field("fallback_rate", pa.float64(), nullable=False),
        pa.field("failed_judgements", pa.int64(), nullable=False),
        pa.field("judge_failure_rate", pa.float64(), nullable=False),
        pa.field("stopped_questions", pa.int64(), nullable=False),  # every judgement failed
        pa.field("judge_calls", pa.int64(), nullable=False),
        pa.field("judge_cached_calls", pa.int64(), nullable=False),
        pa.field("judge_prompt_tokens", pa.int64(), nullable=False),
        pa.field("judge_completion_tokens", pa.int64(), nullable=False),
        pa.field("judge_cost_usd", pa.float64()),
        # of judge_prompt_tokens: served by the provider's prompt cache; billed in batch jobs
        pa.field("judge_cached_prompt_tokens", pa.int64(), nullable=False),
        pa.field("judge_batch_prompt_tokens", pa.int64(), nullable=False),
        pa.field("judge_batch_completion_tokens", pa.int64(), nullable=False),
        pa.field("generated_tokens", pa.int64(), nullable=False),
        # the selected steps' thoughts (agreement.py): naming any tool / naming tools but not
        # the selected action
        pa.field("thought_names_tool_rate", pa.float64(), nullable=False),
        pa.field("thought_mismatch_rate", pa.float64(), nullable=False),
        # share of judged candidates viable under each reading of the judge (judge.grade);
        # null where that reading was not available
        pa.field("viable_rate_expected", pa.float64()),
        pa.field("viable_rate_integer", pa.float64()),
    ]
)


def _viable_rate(scores: list[dict[str, Any]], column: str, threshold: float) -> float | None:
    values = [s[column] for s in scores if s.get(column) is not None]
    return sum(is_viable(v, threshold) for v in values) / len(values) if values else None


def summarize(
    actions: list[str],
    selected: list[dict[str, Any]],
    candidates: list[dict[str, Any]],
    scores: list[dict[str, Any]],
    threshold: float,
    judge_model: str,
    judge_prices: tuple[float | None, float | None] | JudgeRates = (None, None),
) -> tuple[pa.Table, pa.Table]:
    selected_count = Counter(s["action"] for s in selected)
    total = sum(selected_count.values()) or 1
    per_action = []
    for action in actions:
        judged = [s["score"] for s in scores if s["action"] == action and s["score"] is not None]
        cands = [c for c in candidates if c["action"] == action]
        tried = [c for c in cands if c.get("repair_attempts")]
        fixed = sum(bool(c.get("repair_succeeded")) for c in tried)
        per_action.append(
            {
                "action": action,
                "selected": selected_count[action],
                "selected_share": selected_count[action] / total,
                "candidates": len(cands),
                "viable_rate": sum(is_viable(v, threshold) for v in judged) / len(judged)
                if judged
                else 0.0,
                "tool_error_rate": sum(c["status"] != ToolStatus.OK for c in cands) / len(cands)
                if cands
                else 0.0,
                "score_mean": statistics.fmean(judged) if judged else None,
                "score_std": statistics.pstdev(judged) if judged else None,
                "score_p10": quantile(judged, 0.1) if judged else None,
                "score_p50": quantile(judged, 0.5) if judged else None,
                "score_p90": quantile(judged, 0.9) if judged else None,
                "repairs_attempted": len(tried),
                "repairs_succeeded": fixed,
                "repair_rate": fixed / len(tried) if tried else None,
            }
        )
    fresh = [s for s in scores if not s["judge_cached"]]
    prompt_tokens = sum(s["judge_prompt_tokens"] for s in fresh)
    completion_tokens = sum(s["judge_completion_tokens"] for s in fresh)
    rates = (
        judge_prices
        if isinstance(judge_prices, JudgeRates)
        else rates_for(judge_model, *judge_prices)
    )
    cached_prompt = sum(
        s.get("judge_cached_prompt_tokens") or 0 for s in fresh if not s.get("judge_batch")
    )
    batched = [s for s in fresh if s.get("judge_batch")]
    batch_prompt = sum(s["judge_prompt_tokens"] for s in batched)
    batch_completion = sum(s["judge_completion_tokens"] for s in batched)
    failed = sum(s["judge_status"] != JudgeStatus.OK for s in scores)
    outcomes: dict[tuple[int, int], list[bool]] = {}
    for s in scores:
        outcomes.setdefault((s["question_id"], s["step"]), []).append(s["score"] is None)
    agree = agreement(
        ((parse_step(s.get("completion", ""), actions).thought, s["action"]) for s in selected),
        actions,
    )
    run = {
        "questions": len({s["question_id"] for s in selected}),
        "steps": len(selected),
        "entropy_bits": entropy_bits(selected_count),
        "normalized_entropy": normalized_entropy(selected_count, len(actions)),
        "fallback_rate": sum(not s["viable"] for s in selected) / total,
        "failed_judgements": failed,
        "judge_failure_rate": failed / len(scores) if scores else 0.0,
        "stopped_questions": sum(all(v) for v in outcomes.values()),
        "judge_calls": len(scores),
        "judge_cached_calls": len(scores) - len(fresh),
        "judge_prompt_tokens": prompt_tokens,
        "judge_completion_tokens": completion_tokens,
        "judge_cost_usd": None
        if rates is None
        else rates.cost(batch_prompt, batch_completion, 0, True)
        + rates.cost(
            prompt_tokens - batch_prompt, completion_tokens - batch_completion, cached_prompt
        ),
        "judge_cached_prompt_tokens": cached_prompt,
        "judge_batch_prompt_tokens": batch_prompt,
        "judge_batch_completion_tokens": batch_completion,
        "generated_tokens": sum(c["gen_completion_tokens"] for c in candidates),
        "thought_names_tool_rate": agree["names_a_tool_rate"],
        "thought_mismatch_rate": agree["mismatch_rate"],
        "viable_rate_expected": _viable_rate(scores, "score_expected", threshold),
        "viable_rate_integer": _viable_rate(scores, "score_integer", threshold),
    }
    return (
        pa.Table.from_pylist(per_action, schema=ACTIONS_SCHEMA),
        pa.Table.from_pylist([run], schema=RUN_SCHEMA),
    )


REWARDS_SCHEMA = pa.schema(
    [
        pa.field("component", pa.string(), nullable=False),
        pa.field("min", pa.float64(), nullable=False),
        pa.field("mean", pa.float64(), nullable=False),
        pa.field("std", pa.float64(), nullable=False),
        pa.field("max", pa.float64(), nullable=False),
        pa.field("distinct", pa.int64(), nullable=False),
        # cov(component, reward) / var(reward) over the steps (null: not a reward component)
        pa.field("variance_share", pa.float64()),
    ]
)
REWARD_COMPONENTS = ("r_quality", "r_diversity", "r_correct", "reward", "return", "advantage")


def reward_spread(trajectories: pa.Table) -> pa.Table:
    """The spread of every reward component over the labelled steps: a component with one or
    two distinct values carries no signal for PPO."""
    shares = variance_shares(
        trajectories.select(["r_quality", "r_diversity", "r_correct", "reward"]).to_pylist()
    )
    rows = [
        {
            "component": c,
            **spread(trajectories.column(c).to_pylist()),
            "variance_share": shares.get(c),
        }
        for c in REWARD_COMPONENTS
    ]
    return pa.Table.from_pylist(rows, schema=REWARDS_SCHEMA)


def fmt_rate(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


def markdown(per_action: pa.Table, run: pa.Table, rewards: pa.Table | None = None) -> str:
    r = run.to_pylist()[0]
    lines = [
        "# Synthesis summary",
        "",
        f"- questions: {r['questions']}, selected steps: {r['steps']}",
        f"- selected-action entropy: {r['entropy_bits']:.3f} bits "
        f"(normalised {r['normalized_entropy']:.3f})",
        f"- fallback rate (nothing viable): {r['fallback_rate']:.1%}",
        f"- judge failure rate: {r['judge_failure_rate']:.1%} ({r['failed_judgements']} of "
        f"{r['judge_calls']}); questions stopped because every judgement failed: "
        f"{r['stopped_questions']}",
        f"- judge calls: {r['judge_calls']} ({r['judge_cached_calls']} cached, "
        f"{r['failed_judgements']} failed), tokens {r['judge_prompt_tokens']} prompt + "
        f"{r['judge_completion_tokens']} completion"
        + (f", est. cost ${r['judge_cost_usd']:.4f}" if r["judge_cost_usd"] is not None else "")
        + f"; of the prompt tokens {r['judge_cached_prompt_tokens']} served by the provider's "
        f"prompt cache; batch jobs {r['judge_batch_prompt_tokens']} prompt + "
        f"{r['judge_batch_completion_tokens']} completion tokens",
        f"- thought-action agreement: the selected step's thought names a tool in "
        f"{r['thought_names_tool_rate']:.1%} of steps, and names tools other than the selected "
        f"action in {r['thought_mismatch_rate']:.1%}",
        "- viable candidates under each judge reading (judge.grade): expected "
        f"{fmt_rate(r['viable_rate_expected'])}, integer {fmt_rate(r['viable_rate_integer'])}",
        "",
        "| action | selected | share | viable rate | tool errors | score mean | p10 | p50 | p90 "
        "| repaired |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    fmt = lambda v: "–" if v is None else f"{v:.2f}"  # noqa: E731

    def repaired(a: dict) -> str:  # succeeded / attempted (rate): the failed calls repaired
        if not a["repairs_attempted"]:
            return "–"
        return f"{a['repairs_succeeded']}/{a['repairs_attempted']} ({a['repair_rate']:.0%})"

    for a in per_action.to_pylist():
        lines.append(
            f"| {a['action']} | {a['selected']} | {a['selected_share']:.1%} "
            f"| {a['viable_rate']:.1%} "
            f"| {a['tool_error_rate']:.1%} | {fmt(a['score_mean'])} | {fmt(a['score_p10'])} "
            f"| {fmt(a['score_p50'])} | {fmt(a['score_p90'])} | {repaired(a)} |"
        )
    if rewards is not None:
        lines += [
            "",
            "Reward components over the selected steps (as labelling computes them):",
            "",
            "| component | min | mean | std | max | distinct values | share of reward variance |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in rewards.to_pylist():
            share = "–" if r["variance_share"] is None else f"{r['variance_share']:.1%}"
            lines.append(
                f"| {r['component']} | {r['min']:.3f} | {r['mean']:.3f} | {r['std']:.3f} "
                f"| {r['max']:.3f} | {r['distinct']} | {share} |"
            )
    return "\n".join(lines)


# -- log lines: what a synthesis unit says when it finishes ------------------------------------
def shard_line(
    step: int,
    shard: int,
    active: int,
    candidates: pa.Table,
    scores: pa.Table,
    usage: str,
    timings: dict[str, float],
) -> str:
    """One rollout shard at one step: candidates, tool errors, judge failures, model usage
    (``usage``: the generator's and the judge's lines) and time per phase."""
    failed = sum(s != JudgeStatus.OK for s in scores.column("judge_status").to_pylist())
    tool_errors = sum(s != ToolStatus.OK for s in candidates.column("status").to_pylist())
    phases = ", ".join(f"{k} {v:.1f}s" for k, v in sorted(timings.items()))
    return (
        f"step {step} shard {shard}: {active} questions, {candidates.num_rows} candidates, "
        f"tool errors {tool_errors}, judge failures {failed} "
        f"({100 * failed / max(scores.num_rows, 1):.0f}%); {usage} — {phases}"
    )


def stop_lines(step: int, stops: pa.Table) -> list[str]:
    """One line per question whose judgements all failed at this step (a warning each)."""
    return [
        f"question {r['question_id']} stopped at step {step}: {r['reason']}; "
        f"the judge replied {r['judge_replies'][:3]}"
        for r in stops.to_pylist()
    ]


def step_line(step: int, selected: int, stopped: int, counts: Counter) -> str:
    return (
        f"step {step}: selected {selected} actions, {stopped} questions stopped (every "
        f"judgement failed), usage so far {dict(sorted(counts.items()))}"
    )


def summary_lines(judge: str, run: pa.Table, rewards: pa.Table | None) -> list[str]:
    """The judge's failures over the run, and the spread of every reward component."""
    r = run.to_pylist()[0]
    lines = [
        f"thought-action agreement: thoughts name a tool in {r['thought_names_tool_rate']:.1%} "
        f"of selected steps, tools other than the selected action in "
        f"{r['thought_mismatch_rate']:.1%}",
        f"judge {judge}: {r['failed_judgements']} of {r['judge_calls']} judgements failed "
        f"({100 * r['judge_failure_rate']:.1f}%); {r['stopped_questions']} questions stopped "
        "because every judgement of a step failed",
    ]
    if rewards is not None:
        spreads = "; ".join(
            f"{c['component']} {c['min']:.3f}..{c['max']:.3f} (std {c['std']:.3f}, "
            f"{c['distinct']} values)"
            for c in rewards.to_pylist()
        )
        lines.append(f"reward components: {spreads}")
        lines.append(
            "share of the per-step reward variance: "
            + ", ".join(
                f"{c['component']} {c['variance_share']:.1%}"
                for c in rewards.to_pylist()
                if c["variance_share"] is not None
            )
        )
    return lines


@dataclass(frozen=True)
class RunSummary:
    """A synthesis run summed up: per-action table, the run's one-row table, and the spread
    of every reward component (None until the final answers exist)."""

    per_action: pa.Table
    run: pa.Table
    rewards: pa.Table | None


def summarize_run(
    cfg: RunConfig,
    selected: list[dict[str, Any]],
    candidates: list[dict[str, Any]],
    scores: list[dict[str, Any]],
    questions: list[dict[str, Any]] | None = None,
    finals: list[dict[str, Any]] | None = None,
) -> RunSummary:
    """``summarize`` under this run's config; with ``finals``, the selected steps are labelled
    as labelling would (this run's rewards section) for the spread of each component."""
    judge = cfg.judge
    per_action, run = summarize(
        cfg.rollout.actions,
        selected,
        candidates,
        scores,
        cfg.rollout.viable_threshold,
        judge.name,
        model_rates(judge) or (judge.price_per_1k_prompt, judge.price_per_1k_completion),
    )
    rewards = None
    if finals is not None and questions is not None and selected:
        rewards = reward_spread(label(cfg, questions, selected, finals))
    return RunSummary(per_action, run, rewards)
