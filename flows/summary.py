"""The pipeline run's own page tells the story: one row per stage (cached or run, duration,
key counts, model calls and cost), the evaluation headline with its plots, and links to each
stage's run and artifacts, published on the parent flow run; one log line per stage."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect.artifacts import create_markdown_artifact
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    TaskRunFilter,
    TaskRunFilterFlowRunId,
)
from prefect.logging import get_run_logger
from prefect.states import State
from prefect.utilities.urls import url_for

from spark_core.config import RunConfig
from spark_core.evaluation.model_calls import CALLS_SCHEMA
from spark_core.evaluation.report import OVERALL, SUMMARY_SCHEMA, embed_images
from spark_core.memory import PeakMemory
from spark_core.synthesis.summary import RUN_SCHEMA
from tasks.caching import rows as read_rows
from tasks.caching import store_for, ui_key
from tasks.results import Report

FINISHED = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


@dataclass
class StageRow:
    stage: str
    run_id: str | None = None
    run_name: str = ""
    outcome: str = "not run"
    seconds: float = 0.0
    counts: str = ""
    calls: str = "—"
    cost: str = "—"
    memory: str = "—"  # peak RSS (and GPU memory per device) while the stage ran
    extra: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        calls = f"; model calls: {self.calls}" if self.calls != "—" else ""
        memory = f"; {self.memory}" if self.memory != "—" else ""
        return f"{self.stage}: {self.outcome} in {self.seconds:.1f}s — {self.counts}{calls}{memory}"


def stage_units(stage: str) -> set[str]:
    """Task keys of a stage's own units of work, those with a content-addressed cache key
    (not its bookkeeping, such as planning and report tasks, which always runs; nor another
    stage's unit it calls, such as evaluate re-reading ingest's questions)."""
    import importlib

    from prefect import Task

    module = importlib.import_module(f"tasks.{stage}")
    return {
        obj.task_key
        for obj in vars(module).values()
        if isinstance(obj, Task)
        and obj.cache_key_fn is not None
        and obj.fn.__module__ == module.__name__
    }


def task_outcome(flow_run_id: str, started: float, stage: str, wait_s: float = 15.0) -> str:
    """'ran (4 units)', 'cached (4/4 units)' or 'partly cached (3/4 units)' of the stage's
    own units, read from its task runs on the server (their states arrive through its event
    pipeline, so wait briefly until all of them are finished)."""
    deadline = time.monotonic() + wait_s
    names: list[str] = []
    units = stage_units(stage)
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(flow_run_id)
        if run.start_time and run.start_time.timestamp() < started - 1:
            return "reused (finished in an earlier attempt of this run)"
        while True:
            tasks = client.read_task_runs(
                task_run_filter=TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(any_=[run.id]))
            )
            done = all(t.state and t.state.type.value in FINISHED for t in tasks)
            if (tasks and done) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    names = [t.state.name for t in tasks if t.state and t.task_key in units]
    cached, count = names.count("Cached"), f"{len(names)} unit{'s' * (len(names) != 1)}"
    if names and cached == len(names):
        return f"cached ({cached}/{count})"
    if cached:
        return f"partly cached ({cached}/{count})"
    return f"ran ({count})"


def describe(cfg: RunConfig, row: StageRow, result: Any) -> None:
    """Key counts, model calls and cost of one stage, from what it returned (a summary that
    cannot be read says so; it never fails the run)."""
    try:
        _describe(cfg, row, result)
    except Exception as exc:
        row.counts = f"(summary unavailable: {exc!r})"
        get_run_logger().warning("stage %s: summary unavailable: %r", row.stage, exc)


def _describe(cfg: RunConfig, row: StageRow, result: Any) -> None:
    cached = row.outcome.startswith(("cached", "reused"))
    row.calls = "none"  # ingest, label and train call no model; the others say how many
    if row.stage == "ingest":
        row.counts = f"{result.questions.rows} questions, {result.rejected.rows} rejected"
    elif row.stage == "synthesize":
        run = store_for(cfg).read(result.summary.run.name, RUN_SCHEMA).to_pylist()[0]
        generated = sum(s.candidates.rows for s in result.shards)
        row.counts = f"{run['questions']} questions, {run['steps']} selected steps"
        row.calls = f"generator {generated}, judge {run['judge_calls']}"
        if cached:
            row.cost = "$0, cached"
        elif run["judge_cost_usd"] is not None:
            row.cost = f"${run['judge_cost_usd']:.4f}"
        else:
            row.cost = "$0, local models"
    elif row.stage == "label":
        row.counts = (
            f"{result.trajectories.rows} trajectory steps, {result.candidate_pool.rows} candidates"
        )
    elif row.stage == "train":
        row.counts = f"{len(result.trained)} adapters ({', '.join(result.trained)})"
    elif row.stage == "evaluate":
        summary = store_for(cfg).read(result.summary.name, SUMMARY_SCHEMA).to_pylist()
        overall = [r for r in summary if r["category"] == OVERALL and r["seed"] == -1]
        row.extra["overall"] = overall
        row.counts = (
            f"{len(overall)} policies on {overall[0]['n'] if overall else 0} eval questions"
        )
        if result.model_calls:  # each policy's own generator calls (none for a judge)
            store = store_for(cfg)
            calls = sum(r["calls"] for r in read_rows(store, result.model_calls, CALLS_SCHEMA))
            row.calls = f"generator {calls}"
            local = cfg.generator.backend == "hf" and not cfg.evaluation.extra_models
            row.cost = "$0, cached" if cached else "$0, local models" if local else "in its log"


UI = "v2"  # the UI `spark server` serves (Prefect's V2, flows/cli_deploy.py): links open its pages


def _ui(path: str) -> str:
    """A UI address: absolute when Prefect knows its UI's URL, else relative (same origin)."""
    base = url_for("flow-run", obj_id="x")
    return f"{base.rsplit('/runs/', 1)[0]}/{UI}/{path}" if base else f"/{UI}/{path}"


def _pct(value: float | None) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:.1%}"


def headline(overall: list[dict[str, Any]]) -> list[str]:
    """Accuracy beside answered accuracy and the no-answer rate: a policy that answered
    nothing scores its seeded guesses, which the row says ("all guesses")."""
    lines = [
        "| policy | n | accuracy (95% CI) | answered accuracy | no answer | "
        "tool-selection entropy |",
        "|---|---|---|---|---|---|",
    ]
    for o in overall:
        guesses = " — all guesses" if o["no_answer_rate"] >= 1.0 else ""
        lines.append(
            f"| {o['policy']} | {o['n']} | {_pct(o['accuracy'])} ({_pct(o['ci_low'])}–"
            f"{_pct(o['ci_high'])}){guesses} | {_pct(o['answered_accuracy'])} | "
            f"{_pct(o['no_answer_rate'])} | {o['entropy_bits']:.2f} bits "
            f"({o['normalized_entropy']:.2f}) |"
        )
    return lines


def report_link(rows: list[StageRow], key: str) -> str | None:
    """The page of the evaluation report artifact (``key``) of this run's evaluate stage."""
    evaluate = next((r for r in rows if r.stage == "evaluate"), None)
    found = [aid for k, aid in (evaluate.extra.get("arts", []) if evaluate else []) if k == key]
    return _ui(f"artifacts/artifact/{found[-1]}") if found else None


def markdown(rows: list[StageRow], report: Report | None, report_key: str = "") -> str:
    """The summary artifact of the pipeline run."""
    lines = [
        "# SPaRK pipeline",
        "",
        "| stage | outcome | duration | key counts | model calls (cost) | peak memory |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        calls = r.calls if r.calls in ("—", "none") else f"{r.calls} ({r.cost})"
        lines.append(
            f"| {r.stage} | {r.outcome} | {r.seconds:.1f}s | {r.counts} | {calls} | {r.memory} |"
        )
    if peaks := [r.extra["peak"] for r in rows if "peak" in r.extra]:
        run_peak = PeakMemory()
        for peak in peaks:
            run_peak.fold(peak.rss_mb, peak.gpu)
        lines += ["", f"Peak memory of the run (the largest stage): {run_peak.line()}"]
    lines += ["", "## Stage runs and their artifacts", ""]
    for r in rows:
        if r.run_id is None:
            continue
        arts = ", ".join(
            f"[{key}]({_ui(f'artifacts/artifact/{aid}')})" for key, aid in r.extra.get("arts", [])
        )
        run = f"[{r.stage} / {r.run_name}]({_ui(f'runs/flow-run/{r.run_id}')})"
        lines.append(f"- {run}" + (f": {arts}" if arts else ""))
    evaluation = next((r for r in rows if r.stage == "evaluate" and "overall" in r.extra), None)
    if evaluation:
        lines += [
            "",
            "## Evaluation (held-out questions, all categories)",
            "",
            *headline(evaluation.extra["overall"]),
        ]
    if report:
        link = report_link(rows, report_key)
        full = f"[Full report]({link}) (this run's)" if link else "Full report"
        lines += ["", f"{full}; on disk: `{Path(report.html).resolve()}`"]
    if report and report.images:
        folder = Path(report.report).parent
        plots = "\n\n".join(f"![{Path(p).stem}]({Path(p).name})" for p in report.images)
        lines += ["", "## Plots", "", embed_images(plots, folder)]
    return "\n".join(lines) + "\n"


def publish(cfg: RunConfig, rows: list[StageRow], report: Report | None) -> None:
    create_markdown_artifact(
        markdown(rows, report, ui_key("evaluation", cfg)),
        key=ui_key("pipeline", cfg),
        description="SPaRK pipeline: stages and results",
    )


def record(row: StageRow, state: State, started: float) -> None:
    """Fill a stage row from its subflow's final state (``started``: this attempt's start,
    epoch seconds)."""
    run_id = state.state_details.flow_run_id
    row.run_id = str(run_id) if run_id else None
    if run_id:
        with get_client(sync_client=True) as client:
            row.run_name = client.read_flow_run(run_id).name
            artifacts = client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
            )
        row.extra["arts"] = [  # oldest first: a retried stage's newest come last
            (a.key or a.type, str(a.id))
            for a in sorted(artifacts, key=lambda a: str(a.created))
            # not the progress bar, nor Prefect's persisted-result records (no key, no type:
            # they were listed as links titled "None")
            if a.type is not None and a.type != "progress"
        ]
    if not state.is_completed():
        row.outcome = state.name.lower()
    elif row.run_id:
        row.outcome = task_outcome(row.run_id, started, row.stage)


def log(row: StageRow) -> None:
    get_run_logger().info("stage %s", row.line())
