"""``spark check judge|generator`` and ``spark run --dry-run``: know what a run will get and
cost before it spends anything."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from flows.cli_options import ConfigOpt, SetOpt, console, fail, load_run_config
from flows.cli_questions import planned_questions
from spark_core.config import RunConfig

check_app = typer.Typer(
    help="Preflight checks: can the configured endpoint do its job?", no_args_is_help=True
)


def _money(value: float | None) -> str:
    return "unknown (no price)" if value is None else f"${value:,.2f}"


def plan_table(cfg: RunConfig, title: str) -> tuple[Table, str]:
    """Planned calls, tokens and cost per stage and model (no model is called)."""
    from spark_core.run_plan import plan_run

    train, evaluate, note = planned_questions(cfg)
    view = Table(title=f"{title} — {len(train)} train / {len(evaluate)} eval questions")
    for column in ("stage", "model", "calls", "prompt tokens", "completion tokens", "cost"):
        left = column in ("stage", "model")
        view.add_column(column, justify="left" if left else "right", overflow="fold")
    for p in plan_run(cfg, train, evaluate):
        view.add_row(
            p.stage,
            f"{p.role}: {p.backend}:{p.model}",
            f"{p.calls:,}",
            f"{p.prompt_tokens:,}",
            f"{p.completion_tokens:,}",
            _money(p.cost_usd),
        )
    for stage in ("ingest", "label", "train"):
        view.add_row(stage, "no model calls", "0", "0", "0", "$0.00")
    return view, (
        f"{note}. Upper bounds: every question rolls every step; prompts measured on the "
        "real templates at ~4 characters per token, completions at their token limits."
    )


def _print_time(cfg: RunConfig, judge_latency_s: float | None = None) -> None:
    """The calibrated time estimate (flows/cli_estimate.py) below the plan."""
    from flows.cli_estimate import time_table

    try:
        view, note = time_table(cfg, judge_latency_s)
    except Exception as exc:  # a missing key, model or device: the plan above still stands
        console.print(
            f"time not estimated: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}. The "
            "calibration runs the configured generator, judge, sandbox and trainer on this "
            "machine: run it where the run will run, or pass --no-calibration.",
            highlight=False,
            markup=False,
        )
        return
    console.print(view)
    console.print(note, highlight=False)


def _check(role: str, config: str | None, set_: list[str] | None, calibrate: bool = True) -> None:
    from transformers.utils import logging as hf_logging

    from spark_core.models.registry import REGISTRY
    from spark_core.preflight import check_generator, check_judge

    hf_logging.disable_progress_bar()
    cfg = load_run_config(config, set_)
    cache = REGISTRY.response_cache(cfg)
    try:
        view, note = plan_table(cfg, "estimated run")
        if role == "judge":
            report = check_judge(cfg, cache)
        else:
            train, evaluate, _ = planned_questions(cfg)
            report = check_generator(cfg, cache, (train or evaluate)[0])
    except ValueError as exc:
        fail(str(exc))
    for line in report.lines():
        console.print(line, highlight=False, markup=False)
    console.print(view)
    console.print(note, highlight=False)
    if report.usable and calibrate:
        _print_time(cfg, report.latency_s if role == "judge" else None)
    if not report.usable:
        raise typer.Exit(code=1)


CalibrateOpt = Annotated[
    bool,
    typer.Option(
        "--calibrate/--no-calibration",
        help="Measure this machine's rates and print the estimated wall time per stage.",
    ),
]


@check_app.command("judge")
def check_judge_cmd(
    config: ConfigOpt = None, set_: SetOpt = None, calibrate: CalibrateOpt = True
) -> None:
    """Score clearly good and clearly bad calibration steps with the configured judge: parse
    rate, logprob and structured-output support, latency, ranking, and the run's estimated
    tokens and cost. Exits 1 when the judge is unusable."""
    _check("judge", config, set_, calibrate)


@check_app.command("generator")
def check_generator_cmd(
    config: ConfigOpt = None, set_: SetOpt = None, calibrate: CalibrateOpt = True
) -> None:
    """Send a rollout request and a final-answer request to the configured generator: what
    the endpoint supports, latency, and the run's estimated tokens and cost. Exits 1 when
    it cannot generate."""
    _check("generator", config, set_, calibrate)


def dry_run(cfg: RunConfig, calibrate: bool = True) -> None:
    """``spark run --dry-run``: the plan, then (``calibrate``) a short calibration on this
    machine and the estimated wall time per stage; without it, no model is loaded or called."""

    try:
        view, note = plan_table(cfg, "dry run: planned model calls")
    except ValueError as exc:
        fail(str(exc))
    console.print(view)
    console.print(note, highlight=False)
    _print_judge_options(cfg)
    for role in ("generator", "judge"):
        limit = getattr(cfg, role).max_cost_usd
        if limit is not None:
            console.print(f"{role}.max_cost_usd: ${limit:,.2f} per stage", highlight=False)
    if calibrate:
        _print_time(cfg)


def _print_judge_options(cfg: RunConfig) -> None:
    """The synthesis judge priced under each option (per state, provider cache, batch)."""
    from flows.cli_judge_costs import judge_options_table

    train, _, _ = planned_questions(cfg)
    view, note = judge_options_table(cfg, train)
    console.print(view)
    console.print(note, highlight=False)
