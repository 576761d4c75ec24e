"""``spark run --dry-run``'s judge section: the synthesis judge priced under every option it
can use (``spark_core/judge_costs.py``), beside the plan's table."""

from __future__ import annotations

from rich.table import Table

from spark_core.config import RunConfig


def judge_options_table(cfg: RunConfig, train: list) -> tuple[Table, str]:
    from spark_core.judge_costs import cheapest, judge_costs
    from spark_core.judge_estimate import estimated_costs, find_pilot

    costs = judge_costs(cfg, train)
    pilot = find_pilot(cfg)
    expected = {}
    if pilot is not None:
        sample = train[: min(len(train), pilot.questions)]
        expected = {c.option: c for c in estimated_costs(cfg, train, pilot, sample)}
    view = Table(title=f"synthesis judge {cfg.judge.name}: cost by option")
    columns = ["option", "calls", "prompt tokens", "of them cached", "completion", "upper bound"]
    for column in [*columns, *(["estimate"] if pilot else [])]:
        view.add_column(column, justify="left" if column == "option" else "right")
    best = cheapest(costs)
    configured = (cfg.judge.mode, cfg.judge.batch)
    for c in costs:
        marks = []
        if (c.option.mode, c.option.batch) == configured and not c.option.caching:
            marks.append("configured")
        if c is best:
            marks.append("cheapest")
        cells = [
            c.option.name + (f" ({', '.join(marks)})" if marks else ""),
            f"{c.calls:,}",
            f"{c.prompt_tokens:,}",
            f"{c.cached_prompt_tokens:,}",
            f"{c.completion_tokens:,}",
            _usd(c.cost_usd),
        ]
        if pilot is not None:
            cells.append(_usd(expected[c.option].cost_usd))
        view.add_row(*cells)
    note = (
        "Upper bounds: every question rolls every step, completions at their limits. Provider "
        "cache: the 2nd-9th candidate of a state served the shared prefix from the cache "
        "(OpenAI: prefixes of 1,024+ tokens, 128-token steps; not guaranteed when a state's "
        "candidates are sent together). Batch: judge.batch at price_per_1k_*_batch. "
        "per_state: judge.mode=per_state (see the README on agreement)."
    )
    if pilot is None:
        note += (
            " No estimate column: no earlier synthesis of this run with the same rollout to "
            "calibrate from — a pilot under the same run name (e.g. --set data.total=28) "
            "measures the steps a question takes and the judge's tokens per call."
        )
    else:
        note += (
            f" Estimate: from the pilot at {pilot.where} ({pilot.questions} questions, "
            f"{pilot.step_share:.0%} of the steps rolled, {pilot.prompt_tokens_per_call:,.0f} "
            f"prompt and {pilot.completion_tokens_per_call:.1f} completion tokens per "
            f"{pilot.mode} judge call)."
        )
    if best is not None:
        note += f" Cheapest: {best.option.name}."
    return view, note


def _usd(value: float | None) -> str:
    return "unknown (no price)" if value is None else f"${value:,.2f}"
