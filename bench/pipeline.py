"""The demo pipeline end to end: wall time per stage, a fully cached rerun, Prefect's overhead.

Runs the ``pipeline`` flow in-process against a fresh run folder, Prefect home and response
cache (the converted default model in ~/.cache/spark is reused), then again with nothing
changed. Stage times come from Prefect's own records of the stage subflows. Prefect's overhead
per task is measured in the same process: a no-op task run inside a flow versus calling the
same function directly, multiplied by the number of task runs the pipeline made.

    python bench/pipeline.py [--config configs/demo.yaml] [--set evaluation.steps=1 ...]
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import fresh_run  # noqa: E402

STAGES = ("ingest", "synthesize", "label", "train", "evaluate")


async def _runs_since(since: float) -> tuple[dict[str, float], int]:
    """Seconds per stage subflow and the number of task runs, for runs started after `since`."""
    from datetime import datetime, timezone

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterStartTime

    after = datetime.fromtimestamp(since, tz=timezone.utc)
    flow_filter = FlowRunFilter(start_time=FlowRunFilterStartTime(after_=after))
    async with get_client() as client:
        flows = {f.id: f.name for f in await client.read_flows()}
        runs = await client.read_flow_runs(flow_run_filter=flow_filter, limit=200)
        tasks, page = [], None
        while page is None or len(page) == 200:
            page = await client.read_task_runs(
                flow_run_filter=flow_filter, limit=200, offset=len(tasks)
            )
            tasks.extend(page)
    seconds = {}
    for run in runs:
        name = flows.get(run.flow_id, "?")
        if run.start_time and run.end_time:
            seconds[name] = (run.end_time - run.start_time).total_seconds()
    return seconds, len(tasks)


def _task_overhead(n: int = 50) -> float:
    """Seconds Prefect adds to one task run (orchestration, state, persisted result)."""
    from prefect import flow, task

    def work(i: int) -> int:
        return i * i

    traced = task(work, name="noop", persist_result=True, cache_policy=None)

    @flow(name="overhead-probe")
    def probe() -> None:
        for i in range(n):
            traced(i)

    probe()  # warm: flow registration, first-call imports
    start = time.perf_counter()
    probe()
    with_prefect = time.perf_counter() - start
    start = time.perf_counter()
    for i in range(n):
        work(i)
    plain = time.perf_counter() - start
    return (with_prefect - plain) / n


def main() -> None:
    cfg, args = fresh_run()

    from flows.pipeline import pipeline

    started = time.time()
    start = time.perf_counter()
    pipeline(cfg)
    first = time.perf_counter() - start
    stage_seconds, first_tasks = asyncio.run(_runs_since(started))

    rerun_started = time.time()
    start = time.perf_counter()
    pipeline(cfg)
    rerun = time.perf_counter() - start
    rerun_seconds, _ = asyncio.run(_runs_since(rerun_started))

    overhead = _task_overhead()
    print(f"pipeline, {args.config} {' '.join(args.set)} ({os.cpu_count()} CPUs)")
    print(f"  {'stage':<12}{'first run':>12}{'cached rerun':>15}")
    for stage in STAGES:
        print(
            f"  {stage:<12}{stage_seconds.get(stage, 0):>10.1f} s"
            f"{rerun_seconds.get(stage, 0):>13.1f} s"
        )
    print(f"  {'total':<12}{first:>10.1f} s{rerun:>13.1f} s")
    print(f"  cached rerun: {100 * rerun / first:.1f}% of the first run")
    print(
        f"  Prefect overhead: {1000 * overhead:.1f} ms per task run x {first_tasks} task runs"
        f" = {overhead * first_tasks:.1f} s ({100 * overhead * first_tasks / first:.2f}% of the"
        " first run)"
    )


if __name__ == "__main__":
    main()
