"""Task runs are named for what they do ("rollout-step1-shard0", "train-sft", "evaluate-spark");
tests group them by the task they ran ("rollout-shard", "train-adapter", "evaluate-policy"),
found through the task key every task run carries."""

from __future__ import annotations

import importlib

STAGE_MODULES = ("ingest", "synthesize", "label", "train", "evaluate")


def task_names() -> dict[str, str]:
    """Task key -> task name, for every task of the stages' task modules."""
    from prefect import Task

    names = {}
    for stage in STAGE_MODULES:
        module = importlib.import_module(f"tasks.{stage}")
        for obj in vars(module).values():
            if isinstance(obj, Task):
                names[obj.task_key] = obj.name
    return names


def task_name(run) -> str:  # noqa: ANN001 (a TaskRun, or its REST API dict)
    key, name = (
        (run["task_key"], run["name"]) if isinstance(run, dict) else (run.task_key, run.name)
    )
    return task_names().get(key, name)
