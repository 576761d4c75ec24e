"""Deployments on a real `prefect server` (loopback): register, trigger through the CLI with
parameters, run on a worker. The run's process is SIGKILLed mid-run: the run, its subflows and
its tasks end Crashed, none stays "Running"; `prefect flow-run retry` then finishes the run,
skipping every finished stage and unit, and leaves nothing "Running".
The same server and finished run serve the browser test (tests/test_ui_browser.py)."""

from __future__ import annotations

import re
import time

import httpx
import pytest
import yaml

from flows.cli_deploy import PREFECT_FILE, ZOMBIE_AUTOMATION, server_env
from spark_core.config import RunConfig, load_config
from tests.helpers import ROOT, run_tree

OUTCOMES = {"ran", "cached", "partly cached", "reused"}


def test_deployment_defaults_are_the_demo_preset():
    spec = yaml.safe_load(PREFECT_FILE.read_text())
    demo = load_config("configs/demo.yaml")
    names = set()
    for deployment in spec["deployments"]:
        flow = deployment["entrypoint"].rsplit(":", 1)[1]
        names.add(f"{flow}/{deployment['name']}")
        assert RunConfig.model_validate(deployment["parameters"]["config"]) == demo
    assert names == {
        *(f"{s}/{s}-demo" for s in ("pipeline", "ingest", "synthesize", "label", "train")),
        "evaluate/evaluate-demo",
        "train/train-gpu",
        "evaluate/evaluate-nightly",
    }
    (nightly,) = [d for d in spec["deployments"] if d["name"] == "evaluate-nightly"]
    assert nightly["schedules"] == [
        {"cron": "0 3 * * *", "timezone": "UTC", "slug": "every day at 03:00 UTC", "active": True}
    ]


def test_server_settings_point_the_ui_at_a_non_default_port(tmp_path):
    env = server_env(4317, tmp_path)
    assert env["PREFECT_SERVER_UI_API_URL"] == "http://127.0.0.1:4317/api"
    assert env["PREFECT_SERVER_API_HOST"] == "127.0.0.1"
    assert env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    assert env["PREFECT_SERVER_UI_V2_ENABLED"] == "true"  # the UI the README walks through


@pytest.mark.e2e
def test_deploy_registers_the_zombie_automation_and_names_spark_worker(pipeline_run):
    out = pipeline_run["deploy"].stdout
    assert "spark worker" in out and "prefect worker start" not in out, out[-2000:]
    found = httpx.post(
        f"{pipeline_run['api']}/automations/filter",
        json={"automations": {"name": {"any_": [ZOMBIE_AUTOMATION]}}},
        timeout=30,
    ).json()
    (automation,) = found
    trigger = automation["trigger"]
    assert trigger["posture"] == "Proactive" and trigger["after"] == ["prefect.flow-run.heartbeat"]
    assert "prefect.flow-run.heartbeat" in trigger["expect"]
    assert automation["actions"][0]["state"] == "CRASHED"


@pytest.mark.e2e
def test_a_killed_run_leaves_no_zombies(pipeline_run):
    """SIGKILL of the flow run's process: the run, its subflows and tasks end Crashed."""
    state, unfinished, (subflows, tasks) = pipeline_run["after_kill"]
    assert pipeline_run["running_at_kill"]
    assert state["type"] == "CRASHED", pipeline_run["worker_log"]()
    assert unfinished == [], unfinished
    crashed = {r["name"] for r in tasks if r["state"]["type"] == "CRASHED"}
    killed = set(pipeline_run["running_at_kill"])
    assert killed <= crashed, (killed, crashed)
    assert any(f["state"]["type"] == "CRASHED" for f in subflows), subflows


@pytest.mark.e2e
def test_deploy_trigger_kill_and_retry(pipeline_run):
    """After the kill, `prefect flow-run retry` finishes the run: the finished stages and every
    finished unit of the interrupted stage are skipped, and no task or subflow is left
    "Running"."""
    runs = pipeline_run["runs"]
    artifacts = runs / "demo" / "artifacts"
    assert pipeline_run["final"]["type"] == "COMPLETED", pipeline_run["worker_log"]()
    assert pipeline_run["unfinished"] == [], pipeline_run["unfinished"]
    for stage in ("ingest", "synthesize", "label", "train"):
        assert list((artifacts / stage).rglob("*.parquet")), stage
    assert (
        next((artifacts / "train").glob("*/ppo/adapter")) / "adapter_model.safetensors"
    ).is_file()
    # the run's own report folder, by its flow run id; `latest` points at the newest
    own = runs / "demo" / "reports" / pipeline_run["flow_run_id"]
    report = (own / "report.md").read_text()
    assert "| ppo |" in report and "| extra |" in report
    assert (own / "report.html").is_file()
    assert list((artifacts / "evaluate").rglob("eval_summary.parquet"))
    states = pipeline_run["states"]
    # the stages finished before the kill are skipped (Prefect reuses the finished subflow, or
    # reruns it and every unit is a cache hit)
    for name in ("ingest-questions", "rollout-shard", "select-step", "label-trajectories"):
        assert set(states.get(name, ["Cached"])) == {"Cached"}, (name, states)
    # in the interrupted stage, every unit the server saw finish before the kill is a cache hit
    # (a stage that finished before the kill is reused as a whole: no new task runs)
    units = pipeline_run["units_at_kill"]
    killed = {units[n] for n in pipeline_run["running_at_kill"]}
    for unit in ("train-adapter", "evaluate-policy"):
        before = sum(units[n] == unit for n in pipeline_run["completed_at_kill"])
        if unit in killed:
            assert states[unit].count("Cached") >= before, (unit, before, states)
    assert len(states["evaluate-policy"]) == 5


@pytest.mark.e2e
def test_the_pipeline_run_page_tells_the_story(pipeline_run):
    """The parent run holds the summary artifact (a row per stage, the evaluation headline,
    the plots inline) and one log line per stage."""
    api, flow_run_id = pipeline_run["api"], pipeline_run["flow_run_id"]
    artifacts = httpx.post(
        f"{api}/artifacts/filter",
        json={
            "artifacts": {"flow_run_id": {"any_": [flow_run_id]}, "type": {"any_": ["markdown"]}}
        },
        timeout=30,
    ).json()
    text = max(artifacts, key=lambda a: a["created"])["data"]
    for stage in ("ingest", "synthesize", "label", "train", "evaluate"):
        outcome = re.search(rf"^\| {stage} \| ([a-z ]+)\b", text, re.M)
        assert outcome and outcome[1].strip() in OUTCOMES, (stage, text[:3000])
    assert "| extra | " in text and text.count("](data:image/png;base64,") == 3
    assert "| answered accuracy | no answer |" in text
    assert re.search(r"\| evaluate \| [^|]+\| [^|]+\| [^|]+\| generator \d+ \(", text), text[:2000]
    assert re.search(r"\[Full report\]\(http://127\.0\.0\.1:\d+/v2/artifacts/artifact/", text)
    assert "[None](" not in text  # Prefect's result records are not listed as artifacts
    # log lines reach the server in batches after the run ends: wait for the last stage's
    deadline = time.monotonic() + 60
    while True:
        logs = httpx.post(
            f"{api}/logs/filter",
            json={"logs": {"flow_run_id": {"any_": [flow_run_id]}}, "sort": "TIMESTAMP_ASC"},
            timeout=30,
        ).json()
        lines = [log["message"] for log in logs if log["message"].startswith("stage ")]
        if (lines and lines[-1].startswith("stage evaluate")) or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert [line.split(":")[0] for line in lines[-5:]] == [
        f"stage {s}" for s in ("ingest", "synthesize", "label", "train", "evaluate")
    ], lines


def _logs(api: str, flow_run_id: str) -> list[str]:
    logs = httpx.post(
        f"{api}/logs/filter",
        json={"logs": {"flow_run_id": {"any_": [flow_run_id]}}, "sort": "TIMESTAMP_ASC"},
        timeout=30,
    ).json()
    return [log["message"] for log in logs]


@pytest.mark.e2e
def test_the_crashed_run_says_in_its_own_log_what_crashed(pipeline_run):
    """The crash hook runs in the worker; its line goes to the crashed run's own log."""
    api, flow_run_id = pipeline_run["api"], pipeline_run["flow_run_id"]
    deadline = time.monotonic() + 60
    while True:
        lines = [m for m in _logs(api, flow_run_id) if re.match(r"flow run \S+ crashed", m)]
        if lines or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert lines, pipeline_run["worker_log"]()
    assert "non-zero status code" in lines[0] or "exit" in lines[0], lines
    killed = pipeline_run["running_at_kill"]
    assert re.search(r"marked \d+ unfinished task/subflow runs Crashed: ", lines[0]), lines
    assert any(name in lines[0] for name in killed), (killed, lines)


@pytest.mark.e2e
def test_units_are_named_for_what_they_do(pipeline_run):
    names = set()
    for run_id in (pipeline_run["flow_run_id"], pipeline_run["second_flow_run_id"]):
        subflows, tasks = run_tree(pipeline_run["api"], run_id)
        names |= {t["name"] for t in tasks}
    expected = {"ingest-questions", "rollout-step1-shard0", "rollout-step1-shard1"}
    expected |= {"select-step1", "label-trajectories", "train-sft", "train-ppo"}
    expected |= {f"evaluate-{p}" for p in ("base", "base@1", "sft", "ppo", "extra")}
    assert expected <= names, sorted(names)


@pytest.mark.e2e
def test_progress_is_shown_in_words_and_numbers_during_synthesis(pipeline_run):
    seen = pipeline_run.get("progress_during_synthesis", [])
    stage = [d for d in seen if re.fullmatch(r"\d+% — synthesize: step 1/1, .+", d)]
    whole = [d for d in seen if re.fullmatch(r"\d+% — pipeline: stage 2/5, synthesize: .+", d)]
    assert stage and whole, seen


@pytest.mark.e2e
def test_a_second_run_of_the_same_name_keeps_its_own_report(pipeline_run):
    first, second = pipeline_run["flow_run_id"], pipeline_run["second_flow_run_id"]
    assert pipeline_run["second_final"]["type"] == "COMPLETED", pipeline_run["worker_log"]()
    reports = pipeline_run["runs"] / "demo" / "reports"
    assert (reports / first / "report.html").is_file()
    assert (reports / second / "report.html").is_file()
    assert (reports / "latest").resolve() == (reports / second).resolve()


@pytest.mark.e2e
def test_deploy_says_where_the_flows_run(pipeline_run):

    out = pipeline_run["deploy"].stdout
    assert f"Flows will run in {ROOT} (change with --workdir)" in out, out[:2000]
    assert 'spark-gpu stays "Not Ready" until `spark worker --pool spark-gpu`' in out
    assert "/v2/deployments/deployment/" in out  # Prefect's own links, to the UI it serves
