"""``spark server``, ``spark deploy``, ``spark worker``, ``spark submit``: the pipeline as
Prefect deployments on a real server.

The deployments themselves are declared in ``deploy/prefect.yaml``; these commands only run
Prefect's own CLI with the right settings (loopback, analytics off, the UI's API URL on a
non-default port, Prefect's V2 UI, the flows' working directory said and chosen).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Annotated

import typer

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PREFECT_FILE = PROJECT_ROOT / "deploy" / "prefect.yaml"
POOLS = {"spark-process": "process", "spark-gpu": "process"}
DEFAULT_API = "http://127.0.0.1:4200/api"
ZOMBIE_AUTOMATION = "spark: crash flow runs whose heartbeats stopped"
# three heartbeats at Prefect's default frequency (180 s): a run started anywhere against this
# server (spark run, a worker) heartbeats at least that often, so none is taken for a zombie
HEARTBEAT_MISSING = timedelta(seconds=3 * 180)

ApiOpt = Annotated[
    str | None,
    typer.Option("--api-url", help="Prefect API (default: $PREFECT_API_URL or " + DEFAULT_API),
]


def _prefect() -> str:
    """The prefect executable of this environment (not whatever is first on PATH)."""
    return str(Path(sys.executable).parent / "prefect")


def api_url(given: str | None) -> str:
    return given or os.environ.get("PREFECT_API_URL") or DEFAULT_API


def server_env(port: int, home: Path) -> dict[str, str]:
    """Settings for a local server: its own database under the runs folder, loopback only,
    no analytics, and the UI told where the API is when the port is not 4200."""
    url = f"http://127.0.0.1:{port}/api"
    return {
        "PREFECT_HOME": str(home.resolve()),
        "PREFECT_SERVER_API_HOST": "127.0.0.1",
        "PREFECT_SERVER_API_PORT": str(port),
        "PREFECT_SERVER_UI_API_URL": url,
        "PREFECT_API_URL": url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "true",
        # the UI the README walks through and the artifacts link to (flows/summary.py)
        "PREFECT_SERVER_UI_V2_ENABLED": "true",
    }


def client_env(api: str, workdir: Path | None = None) -> dict[str, str]:
    """A process that reports to the server; ``workdir``: where the deployments' flows will
    run (``$SPARK_HOME`` in deploy/prefect.yaml)."""
    env = {**os.environ, "PREFECT_API_URL": api, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    if workdir is not None:
        env["SPARK_HOME"] = str(workdir)
    return env


def is_checkout(folder: Path) -> bool:
    return (folder / "flows" / "pipeline.py").is_file()


def flows_workdir(given: str | None) -> Path:
    """The folder the deployments' flows will run in: ``--workdir``, else ``$SPARK_HOME``,
    else the current directory. Workers import the entrypoints (flows/pipeline.py) from it,
    and a run's relative ``runtime.runs_dir`` (``runs``) lands in it: the current directory
    must be a spark checkout; a folder named explicitly may exist only where the workers run
    (an image's /opt/spark)."""
    explicit = given or os.environ.get("SPARK_HOME")
    folder = Path(explicit or Path.cwd()).expanduser().resolve()
    if not explicit and not is_checkout(folder):
        raise typer.BadParameter(
            f"{folder} is not a spark checkout (no flows/pipeline.py), and the flows run from "
            f"their checkout: run `spark deploy` from one, or pass --workdir {PROJECT_ROOT}",
            param_hint="--workdir",
        )
    return folder


POOL_HELP = {
    "spark-process": "spark worker",
    "spark-gpu": "spark worker --pool spark-gpu",
}


def where_flows_run(workdir: Path, runs_dir: str = "runs") -> str:
    """What `spark deploy` says before registering: where the flows will run, where their
    runs land, and why a pool reads "Not Ready"."""
    pools = "\n".join(
        f"  {pool}: `{command}` (in {workdir})" for pool, command in POOL_HELP.items()
    )
    return (
        f"Flows will run in {workdir} (change with --workdir); runs with the default "
        f"runtime.runs_dir land in {workdir / runs_dir}.\n"
        'A work pool reads "Not Ready" in the UI until a worker polls it; start one per pool:\n'
        f"{pools}\n"
        "(spark-gpu serves train/train-gpu only: it may stay Not Ready on a machine with no GPU.)"
    )


def server(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 4200,
    runs_dir: Annotated[str, typer.Option(help="Holds the server's database.")] = "runs",
) -> None:
    """Start a local Prefect server and UI on 127.0.0.1 (Ctrl-C stops it)."""
    home = Path(runs_dir) / ".prefect-server"
    home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **server_env(port, home)}
    typer.echo(
        f"Prefect UI: http://127.0.0.1:{port}  —  in other shells: "
        f"export PREFECT_API_URL=http://127.0.0.1:{port}/api"
    )
    sys.stdout.flush()
    args = ["server", "start", "--host", "127.0.0.1", "--port", str(port), "--analytics-off"]
    os.execve(_prefect(), [_prefect(), *args], env)


def _ensure_pools(api: str) -> None:
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists
    from prefect.settings import PREFECT_API_URL, temporary_settings

    async def create() -> None:
        async with get_client() as client:
            for name, kind in POOLS.items():
                try:
                    await client.create_work_pool(WorkPoolCreate(name=name, type=kind))
                    typer.echo(f"created work pool {name} ({kind})")
                except ObjectAlreadyExists:
                    pass

    with temporary_settings({PREFECT_API_URL: api}):
        asyncio.run(create())


def zombie_automation():
    """Prefect's own zombie detection: a flow run (pipeline, stage or subflow) that stops
    sending heartbeats without reaching a final state is marked Crashed (docs: "Detect and
    respond to zombie flows"); its unfinished children follow (flows/zombies.py)."""
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    return AutomationCore(
        name=ZOMBIE_AUTOMATION,
        description="Marks a flow run Crashed when it sent no heartbeat for "
        f"{int(HEARTBEAT_MISSING.total_seconds()) // 60} minutes (its process was killed, or "
        "its machine died). Created by `spark deploy`.",
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={
                "prefect.flow-run.heartbeat",
                "prefect.flow-run.Completed",
                "prefect.flow-run.Failed",
                "prefect.flow-run.Cancelled",
                "prefect.flow-run.Crashed",
            },
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=HEARTBEAT_MISSING,
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.CRASHED,
                message="Flow run marked Crashed: no heartbeat for "
                f"{int(HEARTBEAT_MISSING.total_seconds()) // 60} minutes.",
            )
        ],
    )


def _ensure_automation(api: str) -> None:
    """Create (or replace) the zombie automation: one of that name on the server."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api}), get_client(sync_client=True) as client:
        for old in client.read_automations_by_name(ZOMBIE_AUTOMATION):
            client.delete_automation(old.id)
        client.create_automation(zombie_automation())
    minutes = int(HEARTBEAT_MISSING.total_seconds()) // 60
    typer.echo(f"automation: {ZOMBIE_AUTOMATION!r} (no heartbeat for {minutes} min -> Crashed)")


# Prefect's deploy output suggests its own worker command; ours sets up the environment
_WORKER_HINT = re.compile(r"prefect worker start --pool '?([\w-]+)'?")
# ... and links to the V1 UI's pages; `spark server` serves V2 (server_env)
_V1_LINK = re.compile(r"(https?://[^/\s]+)/(deployments|runs|flows)/")


def _spark_worker(match: re.Match[str]) -> str:
    pool = match.group(1)
    return "spark worker" if pool == "spark-process" else f"spark worker --pool {pool}"


def deploy(
    names: Annotated[
        list[str] | None,
        typer.Argument(help="Deployments to register, e.g. pipeline/pipeline-demo (default: all)."),
    ] = None,
    api: ApiOpt = None,
    workdir: Annotated[
        str | None,
        typer.Option(
            "--workdir",
            help="Where the flows run (a spark checkout; runs/ lands in it). Default: "
            "$SPARK_HOME, else the current directory.",
        ),
    ] = None,
) -> None:
    """Create the work pools, register the deployments of deploy/prefect.yaml and the
    automation that marks runs whose heartbeats stopped Crashed."""
    url = api_url(api)
    folder = flows_workdir(workdir)
    typer.echo(where_flows_run(folder) + "\n")
    if not is_checkout(folder):
        typer.echo(f"note: {folder} holds no spark checkout here; workers must find one there\n")
    _ensure_pools(url)
    which = [a for n in names for a in ("--name", n)] if names else ["--all"]
    cmd = [_prefect(), "--no-prompt", "deploy", *which, "--prefect-file", str(PREFECT_FILE)]
    proc = subprocess.Popen(
        cmd, cwd=PROJECT_ROOT, env=client_env(url, folder), stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        line = _V1_LINK.sub(r"\1/v2/\2/", _WORKER_HINT.sub(_spark_worker, line))
        typer.echo(line, nl=False)
    if proc.wait() != 0:
        raise typer.Exit(code=proc.returncode)
    _ensure_automation(url)
    typer.echo(
        f"\nNext: start a worker in another shell (PREFECT_API_URL={url}):\n\n    spark worker\n\n"
        f'Flows will run in {folder}. spark-gpu stays "Not Ready" until '
        "`spark worker --pool spark-gpu` runs on a GPU machine."
    )


def worker(
    pool: Annotated[str, typer.Option(help="Work pool to poll (spark-gpu on a GPU box).")] = (
        "spark-process"
    ),
    limit: Annotated[int | None, typer.Option(help="At most this many runs at once.")] = None,
    api: ApiOpt = None,
) -> None:
    """Start a worker that runs the pool's flow runs (in the folder `spark deploy` chose)."""
    args = ["worker", "start", "--pool", pool, "--type", POOLS.get(pool, "process")]
    if limit:
        args += ["--limit", str(limit)]
    os.execve(_prefect(), [_prefect(), *args], client_env(api_url(api)))


def submit(
    deployment: Annotated[
        str, typer.Argument(help="flow/deployment, e.g. pipeline/pipeline-demo.")
    ],
    config: Annotated[str | None, typer.Option("--config", "-c", help="Run config (YAML).")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", "-s", help="Override: section.key=value.")
    ] = None,
    watch: Annotated[bool, typer.Option(help="Wait for the run to finish.")] = False,
    api: ApiOpt = None,
) -> None:
    """Trigger a deployment with a full run config (preset + overrides) as its parameter."""
    import json

    from spark_core.config import ConfigError, load_config

    try:
        cfg = load_config(config, set_ or [])
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from None
    # unset optional fields are left out: the deployment's form schema has no nulls
    params = json.dumps({"config": cfg.model_dump(mode="json", exclude_none=True)})
    cmd = [_prefect(), "deployment", "run", deployment, "--params", params]
    if watch:
        cmd.append("--watch")
    done = subprocess.run(cmd, env=client_env(api_url(api)))
    raise typer.Exit(code=done.returncode)
