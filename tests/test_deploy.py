"""Deployments on a real `prefect server` (loopback): register, trigger through the CLI with
parameters, run on a worker; a run that fails in its last stage is finished by `prefect
flow-run retry`, which skips every finished stage and unit."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pytest
import yaml

from flows.cli_deploy import PREFECT_FILE, server_env
from spark_core.config import RunConfig, load_config
from tests.conftest import random_adapter

SPARK = str(Path(sys.executable).parent / "spark")
PREFECT = str(Path(sys.executable).parent / "prefect")


def test_deployment_defaults_are_the_demo_preset():
    spec = yaml.safe_load(PREFECT_FILE.read_text())
    demo = load_config("configs/demo.yaml")
    names = set()
    for deployment in spec["deployments"]:
        flow = deployment["entrypoint"].rsplit(":", 1)[1]
        names.add(f"{flow}/{deployment['name']}")
        assert RunConfig.model_validate(deployment["parameters"]["config"]) == demo
    assert names == {
        "pipeline/demo",
        *(f"{s}/demo" for s in ("ingest", "synthesize", "label", "train", "evaluate")),
        "train/gpu",
        "evaluate/nightly",
    }
    (nightly,) = [d for d in spec["deployments"] if d["name"] == "nightly"]
    assert nightly["schedules"] == [{"cron": "0 3 * * *", "timezone": "UTC", "active": True}]


def test_server_settings_point_the_ui_at_a_non_default_port(tmp_path):
    env = server_env(4317, tmp_path)
    assert env["PREFECT_SERVER_UI_API_URL"] == "http://127.0.0.1:4317/api"
    assert env["PREFECT_SERVER_API_HOST"] == "127.0.0.1"
    assert env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        args, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True
    )


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def _flow_run_states(api: str, since: datetime) -> dict[str, list[str]]:
    """Task run state names per task name, for flow runs that started after ``since`` (read
    from the REST API directly: this process may hold Prefect settings of the test harness)."""
    body = {"flow_runs": {"start_time": {"after_": since.isoformat()}}, "limit": 200}
    runs = httpx.post(f"{api}/task_runs/filter", json=body, timeout=30).json()
    states: dict[str, list[str]] = {}
    for run in runs:
        states.setdefault(run["name"].rsplit("-", 1)[0], []).append(run["state"]["name"])
    return states


@pytest.fixture
def server(tmp_path):
    port = _free_port()
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "home")}
    env.pop("PREFECT_API_URL", None)
    log = tmp_path / "server.log"
    proc = _start(
        [SPARK, "server", "--port", str(port), "--runs-dir", str(tmp_path / "srv")], env, log
    )
    api = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert proc.poll() is None, log.read_text()[-3000:]
        time.sleep(1)
    else:
        _stop(proc)
        pytest.fail(f"prefect server did not come up on {api}:\n{log.read_text()[-3000:]}")
    yield api, {**env, "PREFECT_API_URL": api}
    _stop(proc)


def test_deploy_trigger_fail_and_retry(server, tiny_model_dir, tmp_path):
    """The run fails in its last stage (an extra adapter that does not exist yet); once it does,
    `prefect flow-run retry` finishes the run: the finished stages and every finished unit of
    the failed stage are skipped."""
    api, env = server
    run = lambda *args: subprocess.run(  # noqa: E731
        [*args], env=env, capture_output=True, text=True, timeout=400
    )
    deployed = run(SPARK, "deploy", "pipeline/demo", "evaluate/nightly", "--api-url", api)
    assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-3000:]

    schedules = run(PREFECT, "deployment", "inspect", "evaluate/nightly")
    assert "0 3 * * *" in schedules.stdout and "UTC" in schedules.stdout

    worker = _start([SPARK, "worker", "--api-url", api], env, tmp_path / "worker.log")
    runs, extra = tmp_path / "runs", tmp_path / "extra-adapter"
    overrides = [
        f"runtime.runs_dir={runs}",
        f"generator.name={tiny_model_dir}",
        f"judge.name={tiny_model_dir}",
        "data.categories=[math,physics]",
        "rollout.steps=1",
        "rollout.thought_tokens=8",
        "rollout.input_tokens=6",
        "evaluation.steps=1",
        "evaluation.bootstrap_samples=100",
        f'evaluation.extra_adapters={{"extra": "{extra}"}}',
    ]
    worker_log = lambda: (tmp_path / "worker.log").read_text()[-4000:]  # noqa: E731
    try:
        args = [SPARK, "submit", "pipeline/demo", "-c", "configs/demo.yaml", "--watch"]
        submitted = run(*args, *(a for o in overrides for a in ("--set", o)), "--api-url", api)
        assert submitted.returncode != 0 and "Failed" in submitted.stdout, (
            submitted.stdout[-3000:] + worker_log()
        )
        flow_run_id = next(
            line.split("UUID:")[1].strip()
            for line in submitted.stdout.splitlines()
            if "UUID:" in line
        )
        artifacts = runs / "demo" / "artifacts"
        for stage in ("ingest", "synthesize", "label", "train"):
            assert list((artifacts / stage).rglob("*.parquet")), stage
        assert (
            next((artifacts / "train").glob("*/spark/adapter")) / "adapter_model.safetensors"
        ).is_file()
        assert not (runs / "demo" / "report" / "report.md").exists()

        random_adapter(tiny_model_dir, 3).save_pretrained(extra)  # fix the cause, then retry
        since = datetime.now(timezone.utc)
        retried = run(PREFECT, "flow-run", "retry", flow_run_id)
        assert retried.returncode == 0, retried.stdout + retried.stderr
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            inspect = run(PREFECT, "flow-run", "inspect", flow_run_id, "--output", "json")
            state = json.loads(inspect.stdout)["state"]
            stamp = datetime.fromisoformat(state["timestamp"].replace("Z", "+00:00"))
            if state["type"] in ("COMPLETED", "FAILED", "CRASHED") and stamp > since:
                break
            time.sleep(2)
        assert state["type"] == "COMPLETED", worker_log()
        report = (runs / "demo" / "report" / "report.md").read_text()
        assert "| spark |" in report and "| extra |" in report
        assert list((artifacts / "evaluate").rglob("eval_summary.parquet"))

        # task-run states reach the server's database through its event pipeline: wait for them
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            states = _flow_run_states(api, since)
            if len(states.get("evaluate-policy", [])) == 5 and "evaluation-report" in states:
                break
            time.sleep(2)
        # the finished stages are skipped (Prefect reuses the finished subflow, or reruns it
        # and every unit is a cache hit); in the failed stage the four policies evaluated
        # before the failure are cache hits and only the failed one runs
        for name in ("ingest-questions", "rollout-shard", "select-step", "label-trajectories"):
            assert set(states.get(name, ["Cached"])) == {"Cached"}, (name, states)
        assert set(states.get("train-adapter", ["Cached"])) == {"Cached"}, states
        assert sorted(states["evaluate-policy"]) == ["Cached"] * 4 + ["Completed"]
    finally:
        _stop(worker)
