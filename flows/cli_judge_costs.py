"""``spark run --dry-run``'s judge section: the synthesis judge priced under every option it
can use (``spark_core/judge_costs.py``), beside the plan's table."""

from __future__ import annotations

from rich.table import Table

from spark_core.config import RunConfig


def judge_options_table(cfg: RunConfig, train: list) -> tuple[Table, str]:
    from spark_core.judge_costs import cheapest, judge_costs

    costs = judge_costs(cfg, train)
    view = Table(title=f"synthesis judge {cfg.judge.name}: cost by option (upper bounds)")
    for column in ("option", "calls", "prompt tokens", "of them cached", "completion", "cost"):
        view.add_column(column, justify="left" if column == "option" else "right")
    best = cheapest(costs)
    configured = (cfg.judge.mode, cfg.judge.batch)
    for c in costs:
        marks = []
        if (c.option.mode, c.option.batch) == configured and not c.option.caching:
            marks.append("configured")
        if c is best:
            marks.append("cheapest")
        view.add_row(
            c.option.name + (f" ({', '.join(marks)})" if marks else ""),
            f"{c.calls:,}",
            f"{c.prompt_tokens:,}",
            f"{c.cached_prompt_tokens:,}",
            f"{c.completion_tokens:,}",
            "unknown (no price)" if c.cost_usd is None else f"${c.cost_usd:,.2f}",
        )
    note = (
        "Provider cache: the 2nd-9th candidate of a state served the shared prefix from the "
        "cache (OpenAI: prefixes of 1,024+ tokens, 128-token steps; not guaranteed when a "
        "state's candidates are sent together). Batch: judge.batch at price_per_1k_*_batch. "
        "per_state: judge.mode=per_state (see the README on agreement). No estimate column: "
        "no calibration of steps per question or completion lengths exists yet."
    )
    if best is not None:
        note += f" Cheapest: {best.option.name}."
    return view, note
