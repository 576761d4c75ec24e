"""A flow's first line: a run config that does not validate is refused with one line that
names the field and the rule, and no traceback.

Flows take ``config`` unvalidated (``validate_parameters=False``) so that a run created with
the UI's "Enforce Parameter Schema" off, or by a client that skips the schema, ends Failed
with that line instead of Prefect's parameter traceback. The form's schema is unchanged: it
still comes from the ``RunConfig`` annotation.
"""

from __future__ import annotations

from typing import Any

from prefect.logging import get_run_logger
from prefect.states import Failed, State
from pydantic import ValidationError

from spark_core.config import RunConfig


def refusal(err: ValidationError) -> str:
    """'invalid run config: data.categories: unknown categories ['maths']; known: [...]'."""
    problems = []
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"]) or "config"
        message = e["msg"].removeprefix("Value error, ")
        got = e.get("input")
        shown = (
            "" if isinstance(got, dict | list) or e["type"] == "value_error" else f" (got {got!r})"
        )
        problems.append(f"{path}: {message}{shown}")
    return "invalid run config: " + "; ".join(problems) + " — fix it in the run's parameters"


def checked(config: RunConfig | dict[str, Any]) -> tuple[RunConfig, State | None]:
    """The config, validated; or a Failed state whose message is the one-line refusal (the
    flow returns it as its result)."""
    if isinstance(config, RunConfig):
        return config, None
    try:
        return RunConfig.model_validate(config), None
    except ValidationError as err:
        message = refusal(err)
        get_run_logger().error(message)
        return config, Failed(message=message)  # type: ignore[return-value]
