"""What the run page says (issue 25): a bad config refused in one line, each run's own report,
a summary that cannot mislead, units named for what they do, progress in the card's words."""

from __future__ import annotations

import pytest

from flows.refuse import checked, refusal
from spark_core.config import RunConfig, load_config


def _bad(**data) -> dict:
    tree = load_config("configs/demo.yaml").model_dump(mode="json", exclude_none=True)
    tree["data"].update(data)
    return tree


def test_refusal_is_one_line_naming_the_field():
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as err:
        RunConfig.model_validate(_bad(per_category=-1, eval_fraction=2))
    assert refusal(err.value) == (
        "invalid run config: data.per_category: Input should be greater than 0 (got -1); "
        "data.eval_fraction: Input should be less than 1 (got 2) — fix it in the run's parameters"
    )
    with pytest.raises(ValidationError) as err:
        RunConfig.model_validate(_bad(categories=["maths"]))
    line = refusal(err.value)
    assert "\n" not in line
    assert line.startswith(
        "invalid run config: data: data.categories has unknown categories ['maths']; "
        "known: ['biology'"
    )


@pytest.mark.usefixtures("prefect_harness")
def test_a_flow_refuses_a_bad_config_without_a_traceback():
    from flows.ingest import ingest

    state = ingest(_bad(categories=["maths"]), return_state=True)
    assert state.is_failed()
    assert state.message.startswith("invalid run config: data: data.categories has unknown")
    config, refused = checked(load_config("configs/demo.yaml"))
    assert refused is None and config.runtime.run_name == "demo"
