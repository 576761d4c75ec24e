"""What the run page says (issue 25): a bad config refused in one line, each run's own report,
a summary that cannot mislead, units named for what they do, progress in the card's words."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.refuse import checked, refusal
from spark_core.config import RunConfig, load_config


def _bad(**data) -> dict:
    tree = load_config("configs/demo.yaml").model_dump(mode="json", exclude_none=True)
    tree["data"].update(data)
    return tree


def test_refusal_is_one_line_naming_the_field():
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as err:
        RunConfig.model_validate(_bad(per_category=-1, eval_fraction=2))
    assert refusal(err.value) == (
        "invalid run config: data.per_category: Input should be greater than 0 (got -1); "
        "data.eval_fraction: Input should be less than 1 (got 2) — fix it in the run's parameters"
    )
    with pytest.raises(ValidationError) as err:
        RunConfig.model_validate(_bad(categories=["maths"]))
    line = refusal(err.value)
    assert "\n" not in line
    assert line.startswith(
        "invalid run config: data: data.categories has unknown categories ['maths']; "
        "known: ['biology'"
    )


@pytest.mark.usefixtures("prefect_harness")
def test_a_flow_refuses_a_bad_config_without_a_traceback():
    from flows.ingest import ingest

    state = ingest(_bad(categories=["maths"]), return_state=True)
    assert state.is_failed()
    assert state.message.startswith("invalid run config: data: data.categories has unknown")
    config, refused = checked(load_config("configs/demo.yaml"))
    assert refused is None and config.runtime.run_name == "demo"


def test_the_headline_shows_answered_accuracy_and_marks_all_guesses():
    from flows.summary import headline

    nan = float("nan")
    overall = [
        {
            "policy": "base",
            "n": 4,
            "accuracy": 0.5,
            "ci_low": 0.25,
            "ci_high": 0.75,
            "answered_accuracy": 2 / 3,
            "no_answer_rate": 0.25,
            "entropy_bits": 1.5,
            "normalized_entropy": 0.47,
        },
        {  # every answer a seeded guess, two of them lucky
            "policy": "ppo",
            "n": 2,
            "accuracy": 1.0,
            "ci_low": 1.0,
            "ci_high": 1.0,
            "answered_accuracy": nan,
            "no_answer_rate": 1.0,
            "entropy_bits": 0.0,
            "normalized_entropy": 0.0,
        },
    ]
    assert headline(overall) == [
        "| policy | n | accuracy (95% CI) | answered accuracy | no answer | "
        "tool-selection entropy |",
        "|---|---|---|---|---|---|",
        "| base | 4 | 50.0% (25.0%–75.0%) | 66.7% | 25.0% | 1.50 bits (0.47) |",
        "| ppo | 2 | 100.0% (100.0%–100.0%) — all guesses | – | 100.0% | 0.00 bits (0.00) |",
    ]


def test_links_open_the_v2_pages_and_the_report_link_is_this_runs():
    from prefect.settings import PREFECT_UI_URL, temporary_settings

    from flows.summary import StageRow, _ui, report_link

    evaluate = StageRow("evaluate")
    evaluate.extra["arts"] = [
        ("evaluation-demo", "old-attempt"),
        ("evaluation-demo-overall", "table"),
        ("evaluation-demo", "newest"),
    ]
    rows = [StageRow("ingest"), evaluate]
    with temporary_settings({PREFECT_UI_URL: "http://127.0.0.1:4391"}):
        assert _ui("runs/flow-run/abc") == "http://127.0.0.1:4391/v2/runs/flow-run/abc"
        assert (
            report_link(rows, "evaluation-demo")
            == "http://127.0.0.1:4391/v2/artifacts/artifact/newest"
        )
        assert report_link(rows[:1], "evaluation-demo") is None


def test_each_run_keeps_its_report_and_latest_points_at_the_newest(tmp_path):
    from spark_core.evaluation.report_folder import point_latest, report_folder

    first, second = report_folder(tmp_path, "run-1"), report_folder(tmp_path, "run-2")
    for folder, text in ((first, "first"), (second, "second")):
        folder.mkdir(parents=True)
        (folder / "report.md").write_text(text)
        latest = point_latest(folder)
    assert latest == tmp_path / "reports" / "latest"
    assert (latest / "report.md").read_text() == "second"
    assert (first / "report.md").read_text() == "first"  # the older run's report is kept
    assert sorted(p.name for p in (tmp_path / "reports").iterdir()) == ["latest", "run-1", "run-2"]
    with pytest.raises(ValueError, match="not a run id"):
        report_folder(tmp_path, "latest")


def test_a_cached_unit_says_what_it_skipped_in_its_own_terms(tmp_path):
    import pyarrow as pa

    from spark_core.artifacts import ArtifactStore
    from spark_core.evaluation.model_calls import CALLS_SCHEMA
    from spark_core.training.registry import TRAIN_METRICS_SCHEMA, metrics_table
    from tasks.caching import Unit, cached_unit, served

    store = ArtifactStore(str(tmp_path))
    history = [{"step": 5, "loss": 0.9}, {"step": 10, "loss": 0.4123}]
    unit = Unit("train", "k" * 64, {"train/k/sft_metrics": TRAIN_METRICS_SCHEMA}, what="sft")
    cached_unit(store, unit, lambda: [metrics_table("sft", history)], lambda refs: refs)
    line = served(store, ["train/k/sft_metrics"])
    assert line.startswith(
        "sft adapter: 10 training steps (final loss 0.412) not rerun, no model calls; "
    )
    assert line.endswith(" s of work skipped (1 artifacts, 2 rows)")
    calls = pa.table({"policy": ["ppo"], "model": ["m"], "calls": [23]})
    store.write("evaluate/k/calls_ppo", calls, CALLS_SCHEMA, stage="evaluate")
    assert served(store, ["evaluate/k/calls_ppo"]) == (
        "23 generator calls, 0 paid (1 artifacts, 1 rows)"
    )


def test_partly_cached_counts_only_the_stages_own_units():
    from flows.summary import stage_units
    from tasks.evaluate import evaluate_one
    from tasks.ingest import ingest_questions
    from tasks.synthesize import rollout_shard, select

    assert stage_units("evaluate") == {evaluate_one.task_key}  # not ingest's questions
    assert stage_units("synthesize") == {rollout_shard.task_key, select.task_key}
    assert stage_units("ingest") == {ingest_questions.task_key}


def test_units_are_named_for_what_they_do():
    from tasks.evaluate import evaluate_one
    from tasks.synthesize import rollout_shard, select
    from tasks.train import train_adapter, train_run_name

    assert rollout_shard.task_run_name == "rollout-step{step}-shard{shard}"
    assert rollout_shard.task_run_name.format(step=2, shard=1) == "rollout-step2-shard1"
    assert select.task_run_name == "select-step{step}"
    assert evaluate_one.task_run_name.format(policy="ppo") == "evaluate-ppo"
    assert train_adapter.task_run_name is train_run_name


def test_progress_is_written_in_words_and_a_number():
    from tasks.progress import described

    assert described("synthesize: step 1/2, shard 1/2 rolled out", 1 / 6) == (
        "17% — synthesize: step 1/2, shard 1/2 rolled out"
    )
    assert described("train: 2/2 adapters trained", 1.2) == "100% — train: 2/2 adapters trained"


def test_the_crash_line_says_what_crashed():
    from flows.zombies import crash_line

    assert crash_line(
        "pretty-fox",
        "Flow run infrastructure exited with non-zero status code -9.",
        ["train-ppo", "clever-owl"],
    ) == (
        "flow run pretty-fox crashed (Flow run infrastructure exited with non-zero status code "
        "-9.): marked 2 unfinished task/subflow runs Crashed: train-ppo, clever-owl"
    )


def test_deploy_says_where_flows_run_and_why_a_pool_is_not_ready(tmp_path, monkeypatch):
    import typer

    from flows.cli_deploy import PROJECT_ROOT, flows_workdir, where_flows_run

    monkeypatch.delenv("SPARK_HOME", raising=False)
    monkeypatch.chdir(PROJECT_ROOT)
    assert flows_workdir(None) == PROJECT_ROOT  # default: the current directory
    monkeypatch.chdir(tmp_path)
    with pytest.raises(typer.BadParameter, match="is not a spark checkout"):
        flows_workdir(None)  # the current directory must be a checkout
    assert flows_workdir("/opt/spark") == Path("/opt/spark")  # named: may be an image's
    text = where_flows_run(PROJECT_ROOT)
    assert text.startswith(f"Flows will run in {PROJECT_ROOT} (change with --workdir); ")
    assert f"land in {PROJECT_ROOT / 'runs'}" in text
    assert '"Not Ready"' in text and "spark-gpu: `spark worker --pool spark-gpu`" in text
