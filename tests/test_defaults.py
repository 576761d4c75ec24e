"""Every default written once: the library classes that take a setting default to its config
section's field, and a default request's cache key is what it was."""

from __future__ import annotations

import inspect
from dataclasses import fields

import pytest

from spark_core.config import (
    DataConfig,
    EvaluationConfig,
    JudgeConfig,
    ModelConfig,
    ToolsConfig,
    default_of,
)


def _defaults(fn) -> dict:
    return {
        name: p.default
        for name, p in inspect.signature(fn).parameters.items()
        if p.default is not inspect.Parameter.empty
    }


def test_default_of_reads_a_sections_field():
    assert default_of(ToolsConfig, "cpu_seconds") == ToolsConfig().cpu_seconds
    assert default_of(EvaluationConfig, "temperatures") == EvaluationConfig().temperatures
    assert default_of(JudgeConfig, "max_new_tokens") != default_of(ModelConfig, "max_new_tokens")
    with pytest.raises(KeyError):
        default_of(ToolsConfig, "cpu_secs")


def test_sandbox_limits_default_to_the_tools_section():
    from spark_core.tools.sandbox import SandboxLimits

    limits, tools = SandboxLimits(), ToolsConfig()
    assert SandboxLimits.FROM_CONFIG == (
        "cpu_seconds",
        "wall_seconds",
        "memory_mb",
        "max_output_chars",
        "isolation",
    )
    for name in SandboxLimits.FROM_CONFIG:
        assert getattr(limits, name) == getattr(tools, name), name
    assert SandboxLimits.from_config(tools) == limits
    # what the section has no setting for stays the sandbox's own
    assert {f.name for f in fields(SandboxLimits)} - set(SandboxLimits.FROM_CONFIG) == {
        "file_mb",
        "open_files",
    }


def test_requests_default_to_the_model_section_and_keep_their_cache_keys():
    from spark_core.models.requests import ChatRequest, StepRequest

    model = ModelConfig()
    request = ChatRequest((("user", "2+2?"),))
    assert (request.max_new_tokens, request.temperature) == (model.max_new_tokens, 0.0)
    # the response cache's key of a request left at its defaults, as before
    assert request.to_dict() == {
        "messages": [["user", "2+2?"]],
        "max_new_tokens": 64,
        "temperature": 0.0,
        "top_p": 1.0,
        "seed": 0,
        "stop": [],
        "prefill": "",
    }
    with pytest.raises(TypeError):  # the budgets are rollout's: every caller passes them
        StepRequest((("user", "2+2?"),), ("cot",))
    step = StepRequest((("user", "2+2?"),), ("cot",), 48, 32)
    assert step.to_dict() == {
        "messages": [["user", "2+2?"]],
        "names": ["cot"],
        "thought_tokens": 48,
        "input_tokens": 32,
        "temperature": 0.0,
        "top_p": 1.0,
        "seed": 0,
    }


def test_backends_and_judges_default_to_their_sections():
    from spark_core.models.hf.backend import HFBackend
    from spark_core.models.judge.batch import BatchJudging
    from spark_core.models.judge.judge import Judge
    from spark_core.models.judge.scorers import HFJudge, OpenAIJudge
    from spark_core.models.openai.backend import OpenAIBackend

    model, judge = ModelConfig(), JudgeConfig()
    assert _defaults(HFBackend) == {
        "device": model.device,
        "dtype": model.dtype,
        "batch_size": model.batch_size,
    }
    assert _defaults(OpenAIBackend) == {
        "base_url": None,
        "api_key_env": model.api_key_env,
        "concurrency": model.concurrency,
        "timeout_s": model.timeout_s,
        "max_retries": model.max_retries,
    }
    assert _defaults(OpenAIJudge) == {
        "max_new_tokens": judge.max_new_tokens,
        "attempts": judge.attempts,
        "capabilities": None,
    }
    assert _defaults(HFJudge) == {"mode": judge.local_batching}
    assert _defaults(BatchJudging) == {
        "poll_max_s": judge.batch_poll_max_s,
        "timeout_s": judge.batch_timeout_s,
    }
    assert _defaults(Judge)["mode"] == judge.mode


def test_evaluation_statistics_and_sources_default_to_their_sections():
    from spark_core.data import sources
    from spark_core.evaluation import common_entropy, report, seeds, stats, tool_map

    samples = EvaluationConfig().bootstrap_samples
    for fn in (
        stats.bootstrap_ci,
        seeds.hierarchical_bootstrap,
        seeds.paired_differences,
        report.summarize,
        tool_map.tool_map,
        tool_map.tool_report,
        common_entropy.common_entropy,
    ):
        assert _defaults(fn)["samples"] == samples, fn.__name__
    split = DataConfig().hub_split
    assert _defaults(sources.source_hash)["hub_split"] == split
    assert _defaults(sources.read_source)["hub_split"] == split
    assert _defaults(sources.read_hub)["split"] == split
