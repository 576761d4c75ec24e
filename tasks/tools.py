"""The run's tool sandbox: one shared sandbox per process with the run's ``tools`` limits, for
the stages that run tool calls (synthesis, evaluation)."""

from __future__ import annotations

from spark_core.config import RunConfig
from spark_core.tools.sandbox import Sandbox, SandboxLimits, shared_sandbox


def sandbox_for(cfg: RunConfig) -> Sandbox:
    tools = cfg.tools
    return shared_sandbox(
        SandboxLimits.from_config(tools), {"corpus": tools.corpus}, tools.parallelism
    )
