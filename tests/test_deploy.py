"""Deployments on a real `prefect server` (loopback): register, trigger through the CLI with
parameters, run on a worker, find the report; retry the run and see every stage cached."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
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


def _responses(runs: Path) -> int:
    with sqlite3.connect(runs / "cache" / "responses.sqlite") as db:
        return db.execute("select count(*) from responses").fetchone()[0]


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


def test_deploy_trigger_with_parameters_and_retry(server, tiny_model_dir, tmp_path):
    api, env = server
    run = lambda *args: subprocess.run(  # noqa: E731
        [*args], env=env, capture_output=True, text=True, timeout=400
    )
    deployed = run(SPARK, "deploy", "pipeline/demo", "evaluate/nightly", "--api-url", api)
    assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-3000:]

    schedules = run(PREFECT, "deployment", "inspect", "evaluate/nightly")
    assert "0 3 * * *" in schedules.stdout and "UTC" in schedules.stdout

    worker = _start([SPARK, "worker", "--api-url", api], env, tmp_path / "worker.log")
    runs = tmp_path / "runs"
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
    ]
    try:
        args = [SPARK, "submit", "pipeline/demo", "-c", "configs/demo.yaml", "--watch"]
        submitted = run(*args, *(a for o in overrides for a in ("--set", o)), "--api-url", api)
        worker_log = (tmp_path / "worker.log").read_text()[-4000:]
        assert submitted.returncode == 0, submitted.stdout[-3000:] + worker_log
        assert "Completed" in submitted.stdout
        flow_run_id = next(
            line.split("UUID:")[1].strip()
            for line in submitted.stdout.splitlines()
            if "UUID:" in line
        )

        report = runs / "demo" / "report" / "report.md"
        assert "| spark |" in report.read_text()
        artifacts = runs / "demo" / "artifacts"
        for stage in ("ingest", "synthesize", "label", "train", "evaluate"):
            assert list((artifacts / stage).rglob("*.parquet")), stage
        assert (
            next((artifacts / "train").glob("*/spark/adapter")) / "adapter_model.safetensors"
        ).is_file()

        # `prefect flow-run retry` reruns the same run: every stage is a cache hit and no
        # model call is made again
        calls = _responses(runs)
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
        assert state["type"] == "COMPLETED", (tmp_path / "worker.log").read_text()[-4000:]
        # task-run states reach the server's database through its event pipeline: wait for them
        expected = ("ingest-questions", "rollout-shard", "select-step", "train-adapter")
        expected += ("evaluate-policy",)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            states = _flow_run_states(api, since)
            if all(name in states for name in expected):
                break
            time.sleep(2)
        for name in expected:
            assert set(states.get(name, ["missing"])) == {"Cached"}, (name, states)
        assert _responses(runs) == calls
    finally:
        _stop(worker)
