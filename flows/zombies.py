"""No zombie "Running" states after a crash.

Prefect marks a killed flow run Crashed (the worker sees its process die; the heartbeat
automation of ``spark deploy`` catches runs whose worker died too), but it cleans up the
children of *cancelled* runs only: after a crash, the run's task runs and its in-process
subflows (and their task runs) stay "Running" forever, and a retry reattaches to such a
subflow. So every flow of the pipeline marks its stale children Crashed, through the API:

- ``on_crashed`` hook: when the worker reports the crash, right away;
- at the start of a retried top-level run (a new attempt of the same flow run), before any
  stage runs: nothing of the earlier attempt can still be running then, and a crashed
  subflow gets a fresh run instead of being reattached.
"""

from __future__ import annotations

from uuid import UUID

from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterParentFlowRunId,
    TaskRunFilter,
    TaskRunFilterFlowRunId,
    TaskRunFilterState,
    TaskRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.logging.loggers import flow_run_logger
from prefect.states import Crashed

NOT_FINISHED = [StateType.SCHEDULED, StateType.PENDING, StateType.RUNNING, StateType.PAUSED]


def crash_stale_children(flow_run_id: UUID, why: str) -> list[str]:
    """Mark every unfinished task run and subflow run under ``flow_run_id`` (recursively)
    Crashed; returns the names of those marked."""
    with get_client(sync_client=True) as client:
        return _crash_under(client, flow_run_id, f"Crashed: {why}")


def _crash_under(client: SyncPrefectClient, flow_run_id: UUID, message: str) -> list[str]:
    marked: list[str] = []
    subflows = client.read_flow_runs(
        flow_run_filter=FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id])
        )
    )
    for sub in subflows:
        marked += _crash_under(client, sub.id, message)
        if sub.state is None or sub.state.type in NOT_FINISHED:
            client.set_flow_run_state(sub.id, Crashed(message=message), force=True)
            marked.append(sub.name)
    unfinished = TaskRunFilter(
        flow_run_id=TaskRunFilterFlowRunId(any_=[flow_run_id]),
        state=TaskRunFilterState(type=TaskRunFilterStateType(any_=NOT_FINISHED)),
    )
    for _ in range(50):  # pages of at most the server's limit, until none is left
        tasks = client.read_task_runs(task_run_filter=unfinished)
        for task_run in tasks:
            client.set_task_run_state(task_run.id, Crashed(message=message), force=True)
        marked += [t.name for t in tasks]
        if not tasks:
            break
    return marked


def crash_line(flow_run_name: str, why: str | None, marked: list[str]) -> str:
    """What crashed, said once in the crashed run's own log: 'flow run pretty-fox crashed
    (Flow run infrastructure exited with non-zero status code -9.): marked 2 unfinished
    task/subflow runs Crashed: train-ppo, train/clever-owl'."""
    cause = f" ({why})" if why else ""
    names = f": {', '.join(marked)}" if marked else ""
    return (
        f"flow run {flow_run_name} crashed{cause}: marked {len(marked)} unfinished "
        f"task/subflow runs Crashed{names}"
    )


def on_crashed(flow, flow_run, state) -> None:  # noqa: ANN001 (Prefect's hook signature)
    """``on_crashed`` hook: the run died (e.g. its process was killed); crash its children
    and say so in the crashed run's own log (the hook runs in the worker, outside the run's
    context: the flow-run logger ships the line to that run's log, as Prefect's own hook
    lines are)."""
    marked = crash_stale_children(flow_run.id, f"flow run {flow_run.name} crashed")
    line = crash_line(flow_run.name, state.message if state else None, marked)
    flow_run_logger(flow_run, flow).error(line)


def clean_up_earlier_attempt() -> None:
    """At the start of a flow: when this is a retry of a top-level run, crash what the earlier
    attempt left unfinished (a killed process leaves its task runs "Running")."""
    from prefect.context import FlowRunContext
    from prefect.logging import get_run_logger

    ctx = FlowRunContext.get()
    run = ctx.flow_run if ctx else None
    if run is None or run.run_count <= 1 or run.parent_task_run_id is not None:
        return
    marked = crash_stale_children(run.id, "left unfinished by an earlier attempt of this run")
    if marked:
        get_run_logger().info(
            "retry: marked %d task/subflow runs of the earlier attempt Crashed: %s",
            len(marked),
            ", ".join(marked),
        )
