"""A real `prefect server` on loopback, and one pipeline run on it driven through a crash and
two retries (session fixtures, imported by tests/conftest.py: the deployment tests and the
browser test share them, so the server starts and the pipeline runs once)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx
import psutil
import pytest

from tests.helpers import ROOT, run_tree, task_name

SPARK = str(Path(sys.executable).parent / "spark")
PREFECT = str(Path(sys.executable).parent / "prefect")


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
        states.setdefault(task_name(run), []).append(run["state"]["name"])
    return states


FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def _unfinished(api: str, root: str) -> list[str]:
    subflows, tasks = run_tree(api, root)
    return [
        f"{r['name']}: {r['state']['name']}"
        for r in (*subflows, *tasks)
        if r["state"] is None or r["state"]["type"] not in FINAL
    ]


def _progress(api: str, root: str, subflows: list[dict]) -> list[str]:
    """The descriptions of the progress artifacts of a run and its subflows (what the UI's
    cards show)."""
    ids = [root, *(f["id"] for f in subflows)]
    found = httpx.post(
        f"{api}/artifacts/filter",
        json={"artifacts": {"flow_run_id": {"any_": ids}, "type": {"any_": ["progress"]}}},
        timeout=30,
    ).json()
    return [a["description"] for a in found if a.get("description")]


def _state(api: str, flow_run_id: str) -> dict:
    return httpx.get(f"{api}/flow_runs/{flow_run_id}", timeout=30).json()["state"]


def _wait_final(api: str, flow_run_id: str, since: datetime, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = _state(api, flow_run_id)
        stamp = datetime.fromisoformat(state["timestamp"].replace("Z", "+00:00"))
        if state["type"] in FINAL and stamp > since:
            return state
        time.sleep(1)
    return state


def _flow_process(worker: subprocess.Popen, flow_run_id: str) -> psutil.Process | None:
    """The process that runs a flow run: a descendant of the worker, told its run id."""
    for proc in psutil.Process(worker.pid).children(recursive=True):
        try:
            if proc.environ().get("PREFECT__FLOW_RUN_ID") == flow_run_id:
                return proc
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return None


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("prefect-server")
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


@pytest.fixture(scope="session")
def pipeline_run(prefect_server, tiny_model_dir, tmp_path_factory):
    """Deploy, start a worker, submit the pipeline (with an extra adapter policy), SIGKILL its
    process in the train or evaluate stage, retry. Returns what each step saw, for
    tests/test_deploy.py and the browser test."""
    from tests.helpers import random_adapter

    api, env = prefect_server
    tmp_path = tmp_path_factory.mktemp("pipeline-run")
    # task results of this session only: not the checkout's runs/.prefect/storage, where the
    # worker would otherwise persist them beside every earlier session's records
    env = {**env, "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(tmp_path / "results")}
    seen: dict = {"api": api}
    run = lambda *args: subprocess.run(  # noqa: E731
        [*args], env=env, capture_output=True, text=True, timeout=400
    )
    deployed = run(
        SPARK,
        "deploy",
        "pipeline/pipeline-demo",
        "evaluate/evaluate-nightly",
        "--workdir",
        str(ROOT),
    )
    seen["deploy"] = deployed
    if deployed.returncode != 0:
        pytest.fail("spark deploy failed:\n" + deployed.stdout[-3000:] + deployed.stderr[-3000:])

    worker = _start([SPARK, "worker", "--api-url", api], env, tmp_path / "worker.log")
    seen["worker_log"] = worker_log = lambda: (tmp_path / "worker.log").read_text()[-6000:]  # noqa: E731
    runs, extra = tmp_path / "runs", tmp_path / "extra-adapter"
    seen["runs"] = runs
    overrides = [
        f"runtime.runs_dir={runs}",
        f"generator.name={tiny_model_dir}",
        f"judge.name={tiny_model_dir}",
        "data.categories=[math,physics]",
        "rollout.steps=1",
        "rollout.shards=2",  # two shards in parallel: the UI shows both
        "rollout.thought_tokens=8",
        "rollout.input_tokens=6",
        "evaluation.steps=1",
        "evaluation.bootstrap_samples=100",
        f'evaluation.extra_adapters={{"extra": "{extra}"}}',
    ]
    random_adapter(tiny_model_dir, 3).save_pretrained(extra)
    try:
        args = [SPARK, "submit", "pipeline/pipeline-demo", "-c", "configs/demo.yaml"]
        submitted = run(*args, *(a for o in overrides for a in ("--set", o)), "--api-url", api)
        assert submitted.returncode == 0, submitted.stdout[-3000:] + submitted.stderr[-3000:]
        flow_run_id = seen["flow_run_id"] = next(
            line.split("UUID:")[1].strip()
            for line in submitted.stdout.splitlines()
            if "UUID:" in line
        )

        # 1. SIGKILL the flow run's process while it trains or evaluates (a task and a subflow
        # are Running)
        deadline, killed = time.monotonic() + 300, None
        while time.monotonic() < deadline and killed is None:
            subflows, tasks = run_tree(api, flow_run_id)
            states = {t["name"]: (t["state"] or {}).get("type") for t in tasks}
            running = [n for n, s in states.items() if s == "RUNNING"]
            seen["units_at_kill"] = {t["name"]: task_name(t) for t in tasks}
            if any(n.startswith(("rollout-step", "select-step")) for n in running):
                progress = seen.setdefault("progress_during_synthesis", [])
                progress += [d for d in _progress(api, flow_run_id, subflows) if d not in progress]
            units = seen["units_at_kill"]  # a unit's run, not the task run of its subflow
            if any(units[n] in ("train-adapter", "evaluate-policy") for n in running):
                proc = _flow_process(worker, flow_run_id)
                if proc is not None:
                    proc.kill()
                    killed = proc
                    seen["running_at_kill"] = running
                    seen["completed_at_kill"] = [n for n, s in states.items() if s == "COMPLETED"]
            elif _state(api, flow_run_id)["type"] in FINAL:
                pytest.fail("the run ended before it could be killed:\n" + worker_log())
            time.sleep(0.25)
        if killed is None:
            pytest.fail("no train/evaluate task was seen running:\n" + worker_log())
        killed.wait(30)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            state = _state(api, flow_run_id)
            if state["type"] == "CRASHED" and not _unfinished(api, flow_run_id):
                break
            time.sleep(1)
        seen["after_kill"] = (state, _unfinished(api, flow_run_id), run_tree(api, flow_run_id))

        # 2. retry: the run resumes and completes
        since = seen["since"] = datetime.now(timezone.utc)
        retried = run(PREFECT, "flow-run", "retry", flow_run_id)
        assert retried.returncode == 0, retried.stdout + retried.stderr
        seen["final"] = _wait_final(api, flow_run_id, since)
        # task-run states reach the server's database through its event pipeline: wait for them
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            states = _flow_run_states(api, since)
            if len(states.get("evaluate-policy", [])) == 5 and "evaluation-report" in states:
                if not _unfinished(api, flow_run_id):
                    break
            time.sleep(2)
        seen["states"], seen["unfinished"] = states, _unfinished(api, flow_run_id)

        # 3. a second run of the same name (every unit cached) keeps its own report
        since = datetime.now(timezone.utc)
        again = run(*args, *(a for o in overrides for a in ("--set", o)), "--api-url", api)
        assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
        second = seen["second_flow_run_id"] = next(
            line.split("UUID:")[1].strip() for line in again.stdout.splitlines() if "UUID:" in line
        )
        seen["second_final"] = _wait_final(api, second, since)
        yield seen
    finally:
        _stop(worker)
