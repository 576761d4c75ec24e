"""The run config: one typed object describes a whole run.

Presets live in ``configs/*.yaml``; ``--set section.key=value`` (``section.group.key=value``
inside a section's group, e.g. ``training.ppo.epochs``) overrides any field. Every
section is a plain pydantic model so the Prefect UI can render the whole thing as a form, and
so a stage's cache key can hash exactly the section that drives it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from spark_core.config.evaluation import SAMPLED_POLICY, TRAINED_POLICIES, EvaluationConfig
from spark_core.config.section import ConfigError, Section, default_of
from spark_core.config.stages import (
    ACTIONS,
    DataConfig,
    JudgeConfig,
    ModelConfig,
    RewardsConfig,
    RolloutConfig,
    SelectionRule,
    ToolsConfig,
)
from spark_core.config.training import (
    DPOSettings,
    LoraSettings,
    PPOSettings,
    SFTSettings,
    TrainingConfig,
)

__all__ = [
    "ACTIONS",
    "STOP_RULE_FIELDS",
    "SAMPLED_POLICY",
    "TRAINED_POLICIES",
    "ConfigError",
    "DPOSettings",
    "DataConfig",
    "EvaluationConfig",
    "JudgeConfig",
    "LoraSettings",
    "ModelConfig",
    "PPOSettings",
    "RewardsConfig",
    "RolloutConfig",
    "RunConfig",
    "RuntimeConfig",
    "SFTSettings",
    "SelectionRule",
    "ToolsConfig",
    "TrainingConfig",
    "apply_override",
    "default_of",
    "format_validation_error",
    "load_config",
]


class RuntimeConfig(Section):
    """Where a run lives and how its tasks execute."""

    run_name: str = Field(
        "demo",
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="Name of the run's folder under runs_dir (letters, digits, _ . -).",
    )
    runs_dir: str = Field("runs", description="Local folder holding runs and Prefect's home.")
    artifacts_root: str | None = Field(
        None,
        description="Artifact root (any fsspec URL, e.g. s3://bucket/spark); "
        "default <runs_dir>/<run_name>/artifacts.",
    )
    response_cache: str | None = Field(
        None, description="SQLite file caching every model call (default <runs_dir>/cache/)."
    )
    task_runner: Literal["threads", "dask"] = Field(
        "threads",
        description="How a stage's parallel tasks (synthesis shards, evaluated policies) run: "
        "a thread pool in the flow's process, or Dask (prefect-dask).",
    )
    max_workers: int = Field(2, gt=0, description="Threads, or local Dask worker processes.")
    dask_address: str | None = Field(
        None,
        description="Scheduler of a running Dask cluster (tcp://host:8786); default: a "
        "temporary local cluster of max_workers processes.",
    )
    train_deployment: str | None = Field(
        None,
        description="Run the train stage as this deployment (e.g. 'train/train-gpu', on a GPU "
        "work pool) instead of in the pipeline's process; needs a shared artifacts_root.",
    )

    def response_cache_path(self) -> str:
        return self.response_cache or str(Path(self.runs_dir) / "cache" / "responses.sqlite")

    def run_dir(self, *parts: str) -> Path:
        """A local path inside this run's folder: ``<runs_dir>/<run_name>/<parts...>``."""
        return Path(self.runs_dir, self.run_name, *parts)

    def artifacts_url(self) -> str:
        if self.artifacts_root:
            return self.artifacts_root
        return str(self.run_dir("artifacts"))


# the fields of a stage's stop rules (models/stop_rules.py, the judge preflight): whether a
# stage goes on, never what it writes
STOP_RULE_FIELDS = {"max_cost_usd", "max_failure_rate", "failure_window", "preflight"}


class RunConfig(Section):
    """Everything that defines a run; sections map one-to-one onto stages."""

    data: DataConfig = Field(
        default_factory=DataConfig,
        title="Data",
        description="Questions: source, sampling, train/eval split.",
    )
    rollout: RolloutConfig = Field(
        default_factory=RolloutConfig,
        title="Rollout",
        description="Synthesis: steps, actions, selection rule.",
    )
    tools: ToolsConfig = Field(
        default_factory=ToolsConfig, title="Tools", description="Tool execution and sandbox limits."
    )
    generator: ModelConfig = Field(
        default_factory=ModelConfig,
        title="Generator",
        description="The model that writes thoughts and inputs.",
    )
    judge: JudgeConfig = Field(
        default_factory=JudgeConfig,
        title="Judge",
        description="The model that scores each candidate 0-10.",
    )
    rewards: RewardsConfig = Field(
        default_factory=RewardsConfig,
        title="Rewards",
        description="Composite reward, returns and advantages.",
    )
    training: TrainingConfig = Field(
        default_factory=TrainingConfig,
        title="Training",
        description="SFT baseline, offline PPO and DPO adapters.",
    )
    evaluation: EvaluationConfig = Field(
        default_factory=EvaluationConfig,
        title="Evaluation",
        description="Held-out evaluation of the policies.",
    )
    runtime: RuntimeConfig = Field(
        default_factory=RuntimeConfig,
        title="Runtime",
        description="Run folder, artifact root, task runner.",
    )

    @model_validator(mode="after")
    def _check_budgets(self) -> RunConfig:
        cap = self.generator.max_new_tokens
        over = {
            k: v
            for k, v in (
                ("thought_tokens", self.rollout.thought_tokens),
                ("input_tokens", self.rollout.input_tokens),
            )
            if v > cap
        }
        if over:
            raise ValueError(
                f"rollout.{', rollout.'.join(over)} exceed generator.max_new_tokens ({cap}), "
                "the generator's per-call token limit"
            )
        return self

    @model_validator(mode="after")
    def _check_trained_policies(self) -> RunConfig:
        for policy in TRAINED_POLICIES:  # each the adapter of the trainer of its name
            if policy in self.evaluation.policies and policy not in self.training.trainers:
                raise ValueError(
                    f"evaluation.policies has {policy!r}, whose adapter the {policy!r} trainer "
                    f"writes, but training.trainers is {self.training.trainers}: add "
                    f"{policy!r} there or drop it from evaluation.policies"
                )
        return self

    def behaviour_source(self) -> str:
        """Where offline PPO's pi_beta comes from (``training.ppo.behaviour_source`` resolved):
        'reference' when the hf generator wrote the data with the weights training starts
        from, 'stored' when an openai server (possibly other weights) wrote it."""
        source = self.training.ppo.behaviour_source
        if source == "auto":
            return "reference" if self.generator.backend == "hf" else "stored"
        return source

    @model_validator(mode="after")
    def _check_ppo_terms(self) -> RunConfig:
        """Combinations offline PPO cannot train with, refused before any stage runs."""
        t, ppo = self.training, self.training.ppo
        if "ppo" not in t.trainers:
            return self
        if ppo.kl_target is not None and ppo.kl_coef == 0:
            raise ValueError(
                "training.ppo.kl_target needs a starting training.ppo.kl_coef > 0 (the adaptive "
                "penalty doubles and halves beta; 0 stays 0): set kl_coef, e.g. 0.05"
            )
        if ppo.old_logprobs != "behaviour" or self.behaviour_source() != "stored":
            return self
        if ppo.candidates == "all":
            raise ValueError(
                "training.ppo.candidates=all trains on pooled candidates, which carry no stored "
                "behaviour log-probs, but training.ppo.behaviour_source resolves to 'stored': "
                "set training.ppo.behaviour_source=reference (the generator's own weights wrote "
                "them) or training.ppo.old_logprobs=refresh"
            )
        if self.generator.backend == "hf" and t.quantization == "4bit":
            raise ValueError(
                "training.ppo.behaviour_source=stored with the hf generator and "
                "training.quantization=4bit: the stored log-probs come from the generator's "
                "full-precision weights, the trained policy is 4-bit, so the PPO ratios start "
                "far from 1 and most tokens are clipped from the first step; set "
                "training.ppo.behaviour_source=reference (pi_beta re-scored under 4-bit)"
            )
        return self

    def for_seed(self, seed: int) -> RunConfig:
        """This config training with one seed of ``training.seeds``: what one adapter of a
        multi-seed run is trained under."""
        training = self.training.model_copy(update={"seed": seed})
        return self.model_copy(update={"training": training})

    def section(self, name: str) -> dict[str, Any]:
        """A JSON-able dict of one section, the unit that stage cache keys hash. Stop-rule
        fields (cost limits, failure policy, preflight) are left out: they decide whether a stage
        goes on, never what it writes, so raising a limit resumes the same stage."""
        section = getattr(self, name)
        return section.model_dump(
            mode="json", exclude=STOP_RULE_FIELDS & set(type(section).model_fields)
        )


def apply_override(tree: dict[str, Any], assignment: str) -> None:
    """Apply one ``section.key=value`` (or ``section.group.key=value``) override; the value is
    parsed as YAML."""
    if "=" not in assignment:
        raise ConfigError(f"--set {assignment!r}: expected section.key=value")
    dotted, raw = assignment.split("=", 1)
    keys = [k for k in dotted.strip().split(".") if k]
    if not keys:
        raise ConfigError(f"--set {assignment!r}: empty field path")
    node = tree
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {assignment!r}: {key!r} is not a section")
        node = child
    node[keys[-1]] = yaml.safe_load(raw) if raw.strip() else None


def format_validation_error(err: ValidationError, origin: str) -> str:
    lines = [f"{origin}: invalid run config"]
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"]) or "<root>"
        got = e.get("input")
        shown = "" if isinstance(got, dict) else f" (got {got!r})"
        lines.append(f"  {path}: {e['msg']}{shown}")
    return "\n".join(lines)


def merged(parent: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
    """``child`` deep-merged over ``parent``: a section (a mapping) merges key by key, any other
    value (a number, a list, null) of the child replaces the parent's."""
    out = dict(parent)
    for key, value in child.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


def read_preset(path: Path, extended_by: tuple[Path, ...] = ()) -> tuple[dict[str, Any], list[str]]:
    """A preset's mapping with its ``extends:`` chain resolved, and the files it was read from
    (this one first). ``extends: paper.yaml`` names the parent preset, relative to this
    file's folder; this file's mapping is deep-merged over the parent's. ``extends`` is not a
    config field: it is gone from the mapping returned."""
    name = str(path)
    if extended_by:
        name += f" (extended by {extended_by[-1]})"
    if not path.is_file():
        raise ConfigError(f"{name}: config file not found")
    if path.resolve() in {p.resolve() for p in extended_by}:
        chain = " -> ".join(str(p) for p in (*extended_by, path))
        raise ConfigError(f"{extended_by[0]}: `extends` goes round in a circle: {chain}")
    try:
        loaded = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{name}: not valid YAML: {exc}") from exc
    if loaded is None:
        loaded = {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{name}: expected a mapping of sections, got {type(loaded).__name__}")
    if "extends" not in loaded:
        return loaded, [str(path)]
    parent = loaded.pop("extends")
    if not isinstance(parent, str) or not parent.strip():
        raise ConfigError(f"{name}: extends: expected the path of a preset, got {parent!r}")
    base, files = read_preset(path.parent / parent, (*extended_by, path))
    return merged(base, loaded), [str(path), *files]


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Load a preset (or the defaults), with the presets it ``extends``, and apply ``--set``
    overrides, failing with a clear message that names the file and the field path."""
    tree: dict[str, Any] = {}
    origin = "<defaults>"
    if path is not None:
        tree, files = read_preset(Path(path))
        origin = files[0]
        if len(files) > 1:  # a.yaml (extends b.yaml, which extends c.yaml)
            origin += f" (extends {', which extends '.join(files[1:])})"
    for assignment in overrides or []:
        apply_override(tree, assignment)
    if overrides:
        origin += " (with --set " + ", ".join(overrides) + ")"
    try:
        return RunConfig.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, origin)) from None
