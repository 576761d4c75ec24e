"""Each stage flow's peak memory, on its own run page (a table artifact and a log line) and
for the pipeline's summary (``LAST``, read by the parent flow in the same process)."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from prefect.artifacts import create_table_artifact

from spark_core.config import RunConfig
from spark_core.memory import PeakMemory, peak_memory, return_large_frees, trim_heap
from tasks.caching import _logger, ui_key

F = TypeVar("F", bound=Callable[..., Any])
LAST: dict[str, PeakMemory] = {}  # the latest measurement of each stage in this process


def publish_peak(stage: str, cfg: Any, peak: PeakMemory) -> None:
    """Log a stage's peaks and show them on its run page (never fails the stage)."""
    LAST[stage] = peak
    try:
        if not isinstance(cfg, RunConfig):  # a flow that validates its own config takes a dict
            cfg = RunConfig.model_validate(cfg)
        _logger().info("%s: %s", stage, peak.line())
        create_table_artifact(
            [{"stage": stage, **peak.to_dict()}],
            key=f"{ui_key(stage, cfg)}-memory",
            description=f"Peak memory of the {stage} stage (process RSS; GPU per device)",
        )
    except Exception as exc:  # a summary must not hide the stage's own result or error
        _logger().warning("could not publish the %s stage's peak memory: %r", stage, exc)


def measured(stage: str) -> Callable[[F], F]:
    """Wrap a stage flow's body (under ``@flow``) so its peak memory is recorded; the run
    config is the flow's first argument (``config``)."""

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def body(*args: Any, **kwargs: Any) -> Any:
            return_large_frees()  # once per process: a fixed 8 MB mmap threshold
            trim_heap()  # what earlier stages freed is not this stage's
            peak = PeakMemory()
            try:
                with peak_memory() as peak:
                    return fn(*args, **kwargs)
            finally:
                publish_peak(stage, args[0] if args else kwargs["config"], peak)

        # the flow's parameters are validated from this signature: give it the annotations
        # resolved in the flow's own module (they are strings there, and names like RunConfig
        # mean nothing in this one)
        body.__signature__ = inspect.signature(fn, eval_str=True)  # type: ignore[attr-defined]
        return body  # type: ignore[return-value]

    return wrap
