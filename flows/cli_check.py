"""``spark check judge|generator`` and ``spark run --dry-run``: know what a run will get and
cost before it spends anything."""

from __future__ import annotations

import itertools
from typing import Annotated

import typer
from rich.table import Table

from spark_core.config import RunConfig

check_app = typer.Typer(
    help="Preflight checks: can the configured endpoint do its job?", no_args_is_help=True
)
ConfigOpt = Annotated[str | None, typer.Option("--config", "-c", help="Run config preset (YAML).")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="Override a field: section.key=value (repeatable)."),
]


def planned_questions(cfg: RunConfig):
    """(train, eval, note): the run's questions — its ingest artifact when it exists, else the
    source sampled here when it is local; a hub source without one is sized from the config
    with the bundled questions standing in for their length."""
    from spark_core import CATEGORIES
    from spark_core.data.questions import ingest_records
    from spark_core.data.sources import bundled_path, read_file, read_source, source_kind
    from spark_core.protocol import Question
    from tasks.caching import store_for
    from tasks.ingest import ingest_unit

    store = store_for(cfg)
    name = list(ingest_unit(cfg).outputs)[-1]  # the questions
    note = "questions from the ingest artifact"
    data = cfg.data
    if store.exists(name):
        rows = store.read(name).to_pylist()
    elif source_kind(data.source) != "hub":
        rows = ingest_records(read_source(data.source), data).questions.to_pylist()
        note = f"questions sampled from {data.source}"
    else:
        n = data.total or (data.per_category or 0) * len(data.categories or CATEGORIES)
        if not n:
            raise ValueError(
                "a hub source with neither data.total nor data.per_category: run `spark "
                "ingest` first, or set one of them, to size the run"
            )
        sample = ingest_records(
            read_file(bundled_path()),
            data.model_copy(
                update={
                    "per_category": None,
                    "total": None,
                    "eval_fraction": 0.0,
                    "eval_total": None,
                }
            ),
        )
        pool = itertools.cycle(sample.questions.to_pylist())
        n_eval = round(n * data.eval_fraction)
        if data.eval_total is not None:  # a separate held-out pool beside the n sampled
            n, n_eval = n + data.eval_total, data.eval_total
        rows = [{**next(pool), "split": "eval" if i < n_eval else "train"} for i in range(n)]
        note = f"{n} questions from data.total/per_category; lengths from the bundled sample"
    train = [Question.from_row(r) for r in rows if r["split"] == "train"]
    evaluate = [Question.from_row(r) for r in rows if r["split"] == "eval"]
    return train, evaluate, note


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
    from flows.cli import console
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

    from flows.cli import console, fail, load_run_config
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
    from flows.cli import console, fail

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
    from flows.cli import console
    from flows.cli_judge_costs import judge_options_table

    train, _, _ = planned_questions(cfg)
    view, note = judge_options_table(cfg, train)
    console.print(view)
    console.print(note, highlight=False)
