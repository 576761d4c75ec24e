"""The ``spark`` command line.

Prefect is configured (home inside the run folder, analytics off) before it is first imported,
so every command works offline with an embedded, temporary Prefect server.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer
import yaml
from rich.table import Table

from flows import cli_check, cli_deploy
from flows.cli_options import ConfigOpt, SetOpt, console, err_console, fail, load_run_config
from spark_core.config import ConfigError, RunConfig
from spark_core.data.sources import SourceError

app = typer.Typer(help="SPaRK: step-wise offline RL for diverse tool use.", no_args_is_help=True)
config_app = typer.Typer(help="Inspect run configs.", no_args_is_help=True)
app.add_typer(config_app, name="config")
tools_app = typer.Typer(help="List and run the tools (in the sandbox).", no_args_is_help=True)
app.add_typer(tools_app, name="tools")
app.add_typer(cli_check.check_app, name="check")


@app.callback()
def _process_setup() -> None:
    """Every command (a dry run's calibration and `spark check` load models too): glibc's
    mmap threshold fixed (``spark_core.memory.return_large_frees``)."""
    from spark_core.memory import return_large_frees

    return_large_frees()


def _run_flow(fn, cfg: RunConfig) -> Any:
    from prefect.exceptions import FailedRun
    from transformers.utils import logging as hf_logging

    from flows.cli_progress import stage_progress

    hf_logging.disable_progress_bar()  # our bars say how far a stage got; tqdm's would tear them
    try:
        with stage_progress(err_console):
            return fn(cfg)
    except (SourceError, ConfigError, ValueError, FailedRun) as exc:  # FailedRun: planned stop
        fail(str(exc))


def _store(cfg: RunConfig):
    from tasks.caching import store_for

    return store_for(cfg)


def _print_ingest(cfg: RunConfig, refs: Any) -> None:
    questions = refs.questions
    table = _store(cfg).read(questions.name).to_pandas()
    counts = table.groupby(["category", "split"]).size().unstack(fill_value=0)
    view = Table(title=f"questions ({questions.rows} rows)")
    view.add_column("category")
    for col in counts.columns:
        view.add_column(col, justify="right")
    for category, row in counts.iterrows():
        view.add_row(category, *[str(v) for v in row])
    console.print(view)
    console.print(f"questions: {questions.uri}")
    console.print(f"rejected:  {refs.rejected.uri} ({refs.rejected.rows} rows)")


@app.command()
def ingest(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Validate, sample and split MMLU-Pro questions into the `questions` artifact."""
    cfg = load_run_config(config, set_)
    from flows.ingest import ingest as ingest_flow

    _print_ingest(cfg, _run_flow(ingest_flow, cfg))


def synthesis_table(run: dict[str, Any], actions: list[dict[str, Any]]) -> Table:
    """The synthesis summary: one row per action (fits 80 columns, no word cut)."""
    view = Table(
        title=f"synthesis: {run['questions']} questions, {run['steps']} steps, "
        f"entropy {run['entropy_bits']:.2f} bits, "
        f"fallback {run['fallback_rate']:.0%}, judge failures {run['judge_failure_rate']:.0%} "
        f"({run['stopped_questions']} questions stopped)"
    )
    for column in ("action", "selected", "viable\nrate", "score\nmean", "tool\nerrors", "repaired"):
        view.add_column(column, justify="left" if column == "action" else "right", overflow="fold")
    for a in actions:
        mean = "–" if a["score_mean"] is None else f"{a['score_mean']:.2f}"
        view.add_row(
            a["action"],
            str(a["selected"]),
            f"{a['viable_rate']:.0%}",
            mean,
            f"{a['tool_error_rate']:.0%}",
            f"{a['repairs_succeeded']}/{a['repairs_attempted']}" if a["repairs_attempted"] else "–",
        )
    return view


def _print_synthesis(cfg: RunConfig, result: Any) -> None:
    from spark_core.synthesis.summary import ACTIONS_SCHEMA, RUN_SCHEMA

    store = _store(cfg)
    run = store.read(result.summary.run.name, RUN_SCHEMA).to_pylist()[0]
    console.print(
        synthesis_table(run, store.read(result.summary.actions.name, ACTIONS_SCHEMA).to_pylist())
    )


@app.command()
def synthesize(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Roll out the train questions: candidates, judge scores, rarity-first selection."""
    cfg = load_run_config(config, set_)
    from flows.synthesize import synthesize as synthesize_flow

    _print_synthesis(cfg, _run_flow(synthesize_flow, cfg))


@app.command()
def label(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Label the synthesized steps with rewards, returns and advantages (`trajectories`)."""
    cfg = load_run_config(config, set_)
    from flows.label import label as label_flow

    refs = _run_flow(label_flow, cfg)
    console.print(f"trajectories: {refs.trajectories.uri} ({refs.trajectories.rows} rows)")
    console.print(f"candidate pool: {refs.candidate_pool.uri}")


def _print_train(result: Any) -> None:
    for trainer, adapter in result.trained.items():
        console.print(f"{trainer} adapter: {adapter.adapter}")


@app.command()
def train(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Train the adapters of training.trainers (SFT, SPaRK's offline PPO, DPO) on the labels."""
    cfg = load_run_config(config, set_)
    from flows.train import train as train_flow

    _print_train(_run_flow(train_flow, cfg))


# headers stacked one word a line: six columns then fit 80 with the widest values, no column
# squeezed (a squeezed one cuts its words: "pol…", "acc…")
ACCURACY_COLUMNS = ("policy", "accuracy", "95% CI", "answered\naccuracy", "no\nanswer", "invalid")
TOOL_COLUMNS = (
    "policy",
    "per-state\nentropy",
    "pooled\nentropy",
    "normalised",
    "mean\nsteps",
    "tool\nerrors",
)


def evaluation_tables(rows: list[dict[str, Any]]) -> list[Table]:
    """The evaluation summary of the overall rows pooled over seeds, as two tables of six
    columns (accuracy; tool selection): each fits 80 columns — a log's or a narrow terminal's
    width — without cutting a word."""
    from spark_core.evaluation.report import OVERALL

    pooled = [r for r in rows if r["category"] == OVERALL and r["seed"] == -1]
    accuracy = Table(title="evaluation (eval split): accuracy")
    tools = Table(title="evaluation (eval split): tool selection, entropy in bits")
    for view, columns in ((accuracy, ACCURACY_COLUMNS), (tools, TOOL_COLUMNS)):
        for column in columns:
            left = column == "policy"
            view.add_column(column, justify="left" if left else "right", overflow="fold")
    for r in pooled:
        accuracy.add_row(
            r["policy"],
            f"{r['accuracy']:.1%}",
            f"{r['ci_low']:.0%}–{r['ci_high']:.0%}",
            f"{r['answered_accuracy']:.1%}",
            f"{r['no_answer_rate']:.0%}",
            f"{r['invalid_rate']:.0%}",
        )
        tools.add_row(
            r["policy"],
            f"{r['state_entropy_bits']:.2f}",
            f"{r['entropy_bits']:.2f}",
            f"{r['normalized_entropy']:.2f}",
            f"{r['mean_steps']:.2f}",
            f"{r['tool_error_rate']:.0%}",
        )
    return [accuracy, tools]


def _print_report(cfg: RunConfig, result: Any) -> None:
    from spark_core.evaluation.report import SUMMARY_SCHEMA

    for view in evaluation_tables(
        _store(cfg).read(result.summary.name, SUMMARY_SCHEMA).to_pylist()
    ):
        console.print(view)
    console.print(f"report: {result.report}")


@app.command()
def evaluate(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Evaluate base, SFT and SPaRK on the eval split and write the report."""
    cfg = load_run_config(config, set_)
    from flows.evaluate import evaluate as evaluate_flow

    _print_report(cfg, _run_flow(evaluate_flow, cfg))


@app.command("score-outputs")
def score_outputs(
    path: Annotated[str, typer.Argument(help="JSON or JSONL of model outputs (MMLU-Pro format).")],
) -> None:
    """Accuracy per category of outputs in MMLU-Pro's results format, with MMLU-Pro's answer
    extraction and no-answer rule — to check this project's scoring against published numbers."""
    from spark_core.evaluation.score_outputs import score_file

    try:
        per_category, overall = score_file(path)
    except (OSError, ValueError) as exc:
        fail(str(exc))
    view = Table(title=f"{path}")
    for column in ("category", "n", "accuracy", "no answer"):
        view.add_column(column, justify="left" if column == "category" else "right")
    for name, r in [*sorted(per_category.items()), ("overall", overall)]:
        view.add_row(name, str(r["n"]), f"{r['accuracy']:.2%}", f"{r['no_answer']}")
    console.print(view)


@app.command()
def run(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Print planned calls, tokens and cost, and the estimated time per stage "
            "from a short calibration on this machine; run nothing.",
        ),
    ] = False,
    calibrate: Annotated[
        bool,
        typer.Option(
            "--calibrate/--no-calibration",
            help="With --dry-run: --no-calibration prints only the plan (no model loaded).",
        ),
    ] = True,
) -> None:
    """Run the whole pipeline (every stage, cached and resumable)."""
    cfg = load_run_config(config, set_)
    if dry_run:
        return cli_check.dry_run(cfg, calibrate)
    from flows.pipeline import pipeline

    result = _run_flow(pipeline, cfg)
    questions = result.ingest.questions
    console.print(f"questions: {questions.uri} ({questions.rows} rows)")
    _print_synthesis(cfg, result.synthesize)
    traj = result.label.trajectories
    console.print(f"trajectories: {traj.uri} ({traj.rows} rows)")
    _print_train(result.train)
    _print_report(cfg, result.evaluate)


@config_app.command("show")
def config_show(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Print the fully resolved run config."""
    cfg = load_run_config(config, set_)
    sys.stdout.write(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))


@app.command()
def generate(
    prompt: Annotated[str | None, typer.Argument(help="A prompt; or use --question-id.")] = None,
    question_id: Annotated[
        int | None, typer.Option(help="Ask this question from data.source (default: bundled).")
    ] = None,
    max_new_tokens: Annotated[
        int | None, typer.Option(help="Override generator.max_new_tokens.")
    ] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Answer a prompt or an MMLU-Pro question with the configured generator (default: the
    bundled SmolLM2-135M-Instruct, offline on CPU)."""
    from spark_core.data.answers import extract_answer
    from spark_core.data.prompts import direct_answer_prompt
    from spark_core.data.questions import validate
    from spark_core.data.sources import read_source
    from spark_core.models.generator import make_generator
    from spark_core.models.registry import REGISTRY
    from spark_core.models.requests import ChatRequest

    cfg = load_run_config(config, set_)
    if (prompt is None) == (question_id is None):
        fail("give either a PROMPT or --question-id")
    expected = None
    if question_id is not None:
        try:
            rows = validate(
                read_source(cfg.data.source, cfg.data.hub_split, cfg.data.hub_revision)
            ).accepted
        except (SourceError, ValueError) as exc:
            fail(str(exc))
        match = next((r for r in rows if r["question_id"] == question_id), None)
        if match is None:
            fail(f"question_id {question_id} is not in {cfg.data.source}")
        prompt = direct_answer_prompt(match["question"], match["options"], match["category"])
        expected = match["answer"]
    gen_cfg = cfg.generator
    request = ChatRequest.user(
        prompt,
        max_new_tokens=max_new_tokens or gen_cfg.max_new_tokens,
        temperature=gen_cfg.temperature,
    )
    generator = make_generator(gen_cfg, REGISTRY.response_cache(cfg))
    (completion,) = generator.generate([request])
    if completion.finish_reason == "error":
        fail(completion.extra.get("error", "generation failed"))
    console.print(completion.text, highlight=False, markup=False)
    if expected is not None:
        console.print(f"extracted answer: {extract_answer(completion.text)}  (correct: {expected})")
    usage = generator.usage.summary()
    console.print(
        f"[dim]{gen_cfg.backend}:{gen_cfg.name} — {usage['prompt_tokens']} prompt + "
        f"{usage['completion_tokens']} completion tokens"
        f"{' (cached)' if completion.cached else ''}[/]"
    )


@tools_app.command("list")
def tools_list() -> None:
    """Every candidate action: the registered tools, then chain-of-thought."""
    from spark_core.tools.registry import COT, COT_DESCRIPTION, discover

    view = Table(title="actions")
    for column in ("name", "description", "input"):
        view.add_column(column, overflow="fold")
    for tool in discover().values():
        view.add_row(tool.name, tool.description, tool.input_format)
    view.add_row(COT, COT_DESCRIPTION, "the thought itself")
    console.print(view)


@tools_app.command("run")
def tools_run(
    name: Annotated[str, typer.Argument(help="Tool name (see `spark tools list`).")],
    text: Annotated[str, typer.Argument(help="The tool input, as a model would write it.")],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the result object as JSON.")
    ] = False,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Run one tool call through the sandbox, with the limits of the run config."""
    import json

    from spark_core.tools.base import ToolStatus
    from spark_core.tools.batch import ToolCall, run_batch
    from spark_core.tools.registry import action_names
    from spark_core.tools.sandbox import Sandbox, SandboxLimits

    cfg = load_run_config(config, set_)
    if name not in action_names():
        fail(f"unknown tool {name!r}; known: {', '.join(action_names())}")
    with Sandbox(SandboxLimits.from_config(cfg.tools), {"corpus": cfg.tools.corpus}) as sandbox:
        (row,) = run_batch([ToolCall(0, 0, name, text)], sandbox, 1)
    result = {k: row[k] for k in ("status", "output", "error", "latency_ms")}
    if as_json:
        sys.stdout.write(json.dumps(result) + "\n")
    else:
        style = "green" if result["status"] == ToolStatus.OK else "red"
        console.print(f"[{style}]{result['status']}[/] ({result['latency_ms']:.1f} ms)")
        console.print(result["output"] or result["error"], highlight=False, markup=False)
    if result["status"] != ToolStatus.OK:
        raise typer.Exit(code=1)


for _command in (cli_deploy.server, cli_deploy.deploy, cli_deploy.worker, cli_deploy.submit):
    app.command()(_command)


if __name__ == "__main__":
    app()
