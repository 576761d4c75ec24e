"""The ``label`` flow: composite rewards, returns and advantages -> ``trajectories``."""

from __future__ import annotations

from prefect import flow

from flows.refuse import checked
from flows.zombies import clean_up_earlier_attempt, on_crashed
from spark_core.config import RunConfig
from tasks.label import label_trajectories
from tasks.memory import measured
from tasks.results import Labels, Synthesis


@flow(name="label", log_prints=True, on_crashed=[on_crashed], validate_parameters=False)
@measured("label")
def label(config: RunConfig, synthesis: Synthesis | None = None) -> Labels:
    """Label the synthesized trajectories (runs synthesis first when not given; cached)."""
    config, refused = checked(config)
    if refused:
        return refused
    clean_up_earlier_attempt()
    if synthesis is None:
        from flows.synthesize import synthesize

        synthesis = synthesize(config)
    return label_trajectories(config, synthesis)
