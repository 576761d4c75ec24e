"""The run config: one typed object describes a whole run.

Presets live in ``configs/*.yaml``; ``--set section.key=value`` overrides any field. Every
section is a plain pydantic model so the Prefect UI can render the whole thing as a form, and
so a stage's cache key can hash exactly the section that drives it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from spark_core import CATEGORIES


class ConfigError(ValueError):
    """A config that cannot be used, with the file and field path that are wrong."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Section):
    """Where the questions come from and how they are sampled and split."""

    source: str = Field(
        "bundled",
        description="'bundled' (the sample shipped with spark), a local/fsspec path to a "
        ".parquet/.json/.jsonl file in MMLU-Pro's schema, or a hub dataset id such as "
        "'TIGER-Lab/MMLU-Pro'.",
    )
    hub_split: str = Field("test", description="Split to load when `source` is a hub dataset.")
    hub_revision: str | None = Field(None, description="Hub revision (commit/tag) to pin.")
    categories: list[str] | None = Field(
        None, description="Keep only these categories (default: all 14)."
    )
    per_category: int | None = Field(
        None, gt=0, description="Sample this many questions per category."
    )
    total: int | None = Field(
        None, gt=0, description="Sample this many questions in all, allocated by category size."
    )
    eval_fraction: float = Field(
        0.3, ge=0.0, lt=1.0, description="Share of each category held out for evaluation."
    )
    seed: int = Field(0, description="Seed for sampling and the train/eval split.")

    @model_validator(mode="after")
    def _check(self) -> DataConfig:
        if self.per_category is not None and self.total is not None:
            raise ValueError("set at most one of data.per_category and data.total")
        unknown = sorted(set(self.categories or ()) - set(CATEGORIES))
        if unknown:
            raise ValueError(f"unknown categories {unknown}; known: {list(CATEGORIES)}")
        return self


ACTIONS: tuple[str, ...] = (
    "calculator",
    "python",
    "symbolic_math",
    "unit_converter",
    "chemistry",
    "statistics",
    "finance",
    "knowledge_search",
    "cot",
)


class RolloutConfig(_Section):
    """Step-wise trajectory synthesis (the SPaRK rollout)."""

    steps: int = Field(5, gt=0, description="Steps rolled per question (T).")
    actions: list[str] = Field(
        default_factory=lambda: list(ACTIONS),
        description="Candidate actions considered at every step: tools plus 'cot'.",
    )
    viable_threshold: float = Field(
        6.0, ge=0, le=10, description="Judge score at or above which a candidate is viable."
    )
    selection: Literal["rarity_first", "lowest_viable", "greedy"] = Field(
        "rarity_first", description="Selection rule among the judged candidates."
    )
    shards: int = Field(2, gt=0, description="Question shards processed in parallel.")
    thought_tokens: int = Field(48, gt=0, description="Max new tokens for a step's thought.")
    input_tokens: int = Field(32, gt=0, description="Max new tokens for an action input.")
    observation_chars: int = Field(300, gt=0, description="Observation kept in the state.")
    seed: int = Field(0, description="Seed for sampled generation and no-answer guesses.")

    @model_validator(mode="after")
    def _check_actions(self) -> RolloutConfig:
        if len(set(self.actions)) != len(self.actions) or not self.actions:
            raise ValueError("rollout.actions must be a non-empty list without repeats")
        return self


class ToolsConfig(_Section):
    """Tool execution and its sandbox limits."""

    corpus: str = Field(
        "bundled", description="knowledge_search corpus: 'bundled' or a .parquet/.jsonl path."
    )
    parallelism: int = Field(2, gt=0, description="Concurrent tool calls in a batch.")
    cpu_seconds: float = Field(2.0, gt=0, description="CPU-time limit per sandboxed call.")
    wall_seconds: float = Field(5.0, gt=0, description="Wall-time limit per sandboxed call.")
    memory_mb: int = Field(512, gt=0, description="Address-space limit per sandboxed call.")
    max_output_chars: int = Field(2000, gt=0, description="Tool output is truncated to this.")


class ModelConfig(_Section):
    """A generator/policy model: local transformers or any OpenAI-compatible server."""

    backend: Literal["hf", "openai"] = "hf"
    name: str = Field(
        "smollm2-135m-instruct",
        description="Hugging Face id or local path; 'smollm2-135m-instruct' is the bundled "
        "default; for 'openai' the served model name.",
    )
    base_url: str | None = Field(None, description="OpenAI-compatible endpoint (openai backend).")
    api_key_env: str = Field(
        "OPENAI_API_KEY", description="Environment variable that holds the API key."
    )
    device: str = Field("auto", description="'auto', 'cpu', 'cuda' or 'cuda:N'.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    max_new_tokens: int = Field(64, gt=0)
    temperature: float = Field(0.0, ge=0, description="0 means greedy decoding.")
    batch_size: int = Field(16, gt=0, description="Generation batch size (hf backend).")
    concurrency: int = Field(16, gt=0, description="Concurrent requests (openai backend).")
    timeout_s: float = Field(60.0, gt=0, description="Per-request timeout (openai backend).")
    max_retries: int = Field(5, ge=0)
    price_per_1k_prompt: float | None = Field(
        None, ge=0, description="USD per 1k prompt tokens (default: known OpenAI prices)."
    )
    price_per_1k_completion: float | None = Field(None, ge=0)


class JudgeConfig(ModelConfig):
    """The judge that scores every candidate 0-10."""

    max_new_tokens: int = Field(8, gt=0)
    attempts: int = Field(3, gt=0, description="Tries for a reply that carries a score.")
    mode: Literal["prefix", "batched", "single"] = Field(
        "prefix", description="Local judge: reuse the step's shared prompt prefix (KV cache)."
    )


class RewardsConfig(_Section):
    """Composite reward: quality + diversity + terminal correctness."""

    w_quality: float = 1.0
    w_diversity: float = 0.5
    w_correct: float = 1.0
    rarity_bonus: Literal["one_minus_p", "neg_log_p"] = Field(
        "one_minus_p", description="Diversity bonus from the action's global usage share p."
    )
    gamma: float = Field(1.0, ge=0, le=1, description="Discount for returns.")
    baseline: Literal["step_mean", "global_mean", "none"] = Field(
        "step_mean", description="Subtracted from returns: mean return at the same step index."
    )
    normalize_advantages: bool = True


class TrainingConfig(_Section):
    """SFT baseline and offline PPO (LoRA on CPU, QLoRA on CUDA)."""

    quantization: Literal["auto", "none", "4bit"] = "auto"
    lora_r: int = Field(8, gt=0)
    lora_alpha: int = Field(16, gt=0)
    lora_dropout: float = Field(
        0.0, ge=0, lt=1, description="0 keeps PPO's ratio exactly 1 at the start of an epoch."
    )
    learning_rate: float = Field(1e-4, gt=0)
    epochs: int = Field(1, gt=0)
    batch_size: int = Field(4, gt=0)
    grad_accum: int = Field(1, gt=0)
    max_seq_len: int = Field(256, gt=0)
    clip_eps: float = Field(0.2, gt=0, description="PPO clip range epsilon.")
    kl_coef: float = Field(0.05, ge=0, description="beta: weight of KL(policy || reference).")
    kl_estimator: Literal["k1", "k3"] = "k3"
    entropy_coef: float = Field(0.0, ge=0)
    ppo_epochs: int = Field(2, gt=0, description="PPO epochs (old log-probs refreshed each).")
    candidates: Literal["chosen", "all"] = Field(
        "chosen",
        description="PPO on the chosen steps, or on all judged candidates with "
        "group-relative advantages.",
    )
    max_steps: int = Field(-1, description="Stop after this many optimizer steps (-1: epochs).")
    logging_steps: int = Field(1, gt=0)
    save_steps: int = Field(50, gt=0, description="Checkpoint every N steps (resume after a kill).")
    seed: int = 0


SAMPLED_POLICY = "base@T"  # the base model sampled at evaluation.sampling_temperature


class EvaluationConfig(_Section):
    """Held-out evaluation of base, SFT and SPaRK policies (plus any extra ones)."""

    steps: int = Field(5, gt=0, description="Maximum policy steps per question.")
    policies: list[Literal["base", "base@T", "sft", "spark"]] = Field(
        default_factory=lambda: ["base", SAMPLED_POLICY, "sft", "spark"],
        description="Built-in policies: the untrained generator (greedy), the untrained "
        "generator sampled at sampling_temperature (base@T, the high-temperature baseline), "
        "and the two trained adapters.",
    )
    action_decoding: Literal["constrained", "free"] = Field(
        "constrained",
        description="constrained: the action is chosen among the action names by scoring "
        "them (its exact distribution is stored); free: the model writes the whole step and "
        "an unparsable action counts as invalid.",
    )
    sampling_temperature: float = Field(
        1.0, gt=0, description="Temperature of the base@T sampling baseline."
    )
    extra_adapters: dict[str, str] = Field(
        default_factory=dict, description="More policies: name -> PEFT adapter folder."
    )
    extra_models: dict[str, ModelConfig] = Field(
        default_factory=dict, description="More policies: name -> model (e.g. an OpenAI model)."
    )
    bootstrap_samples: int = Field(1000, gt=0)
    merge_adapters: bool = Field(
        True,
        description="Evaluate hf adapters merged into a copy of the base weights: base-model "
        "speed for one extra copy of the weights per adapter policy.",
    )
    seed: int = 0


class RuntimeConfig(_Section):
    """Where a run lives and how its tasks execute."""

    run_name: str = Field("demo", pattern=r"^[A-Za-z0-9_.-]+$")
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
        description="Run the train stage as this deployment (e.g. 'train/gpu', served by a GPU "
        "work pool) instead of in the pipeline's process; needs a shared artifacts_root.",
    )

    def response_cache_path(self) -> str:
        return self.response_cache or str(Path(self.runs_dir) / "cache" / "responses.sqlite")

    def artifacts_url(self) -> str:
        if self.artifacts_root:
            return self.artifacts_root
        return str(Path(self.runs_dir) / self.run_name / "artifacts")


class RunConfig(_Section):
    """Everything that defines a run; sections map one-to-one onto stages."""

    data: DataConfig = Field(default_factory=DataConfig)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    tools: ToolsConfig = Field(default_factory=ToolsConfig)
    generator: ModelConfig = Field(default_factory=ModelConfig)
    judge: JudgeConfig = Field(default_factory=JudgeConfig)
    rewards: RewardsConfig = Field(default_factory=RewardsConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)

    def section(self, name: str) -> dict[str, Any]:
        """A JSON-able dict of one section, the unit that stage cache keys hash."""
        return getattr(self, name).model_dump(mode="json")


def apply_override(tree: dict[str, Any], assignment: str) -> None:
    """Apply one ``section.key=value`` override; the value is parsed as YAML."""
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


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Load a preset (or the defaults) and apply ``--set`` overrides, failing with a clear
    message that names the file and the field path."""
    tree: dict[str, Any] = {}
    origin = "<defaults>"
    if path is not None:
        origin = str(path)
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{origin}: config file not found")
        try:
            loaded = yaml.safe_load(p.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"{origin}: not valid YAML: {exc}") from exc
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(
                f"{origin}: expected a mapping of sections, got {type(loaded).__name__}"
            )
        tree = loaded
    for assignment in overrides or []:
        apply_override(tree, assignment)
    if overrides:
        origin += " (with --set " + ", ".join(overrides) + ")"
    try:
        return RunConfig.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, origin)) from None
