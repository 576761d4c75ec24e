"""The run config: one typed object describes a whole run.

Presets live in ``configs/*.yaml``; ``--set section.key=value`` overrides any field. Every
section is a plain pydantic model so the Prefect UI can render the whole thing as a form, and
so a stage's cache key can hash exactly the section that drives it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from spark_core import CATEGORIES


class ConfigError(ValueError):
    """A config that cannot be used, with the file and field path that are wrong."""


def _form_schema(schema: dict[str, Any]) -> None:
    """Shape a section's JSON schema for the Prefect UI's form (schema metadata only; the
    pydantic model still validates): an optional field (``X | None``, default None) is shown
    as a plain X input that may be left empty, not as an "X | None" type switch, so its
    validation message names the rule (e.g. "must be > 0"); descriptions escape ``<…>``
    placeholders, which the UI would otherwise take for HTML tags."""
    for prop in schema.get("properties", {}).values():
        branches = prop.get("anyOf", [])
        kept = [b for b in branches if b.get("type") != "null"]
        if len(kept) == 1 and len(branches) == 2 and prop.get("default", 0) is None:
            del prop["anyOf"], prop["default"]
            prop.update({k: v for k, v in kept[0].items() if k not in prop})
        if "description" in prop:
            prop["description"] = prop["description"].replace("<", "&lt;").replace(">", "&gt;")


def _choices(values: tuple[str, ...]) -> dict[str, Any]:
    """Form metadata for a list of known values: a multi-select without repeats."""
    return {"items": {"type": "string", "enum": list(values)}, "uniqueItems": True}


class _Section(BaseModel):
    model_config = ConfigDict(
        extra="forbid", validate_assignment=True, json_schema_extra=_form_schema
    )
    # old field name -> new one: a preset or --set that still uses the old name is told so
    _renamed: ClassVar[dict[str, str]] = {}

    @model_validator(mode="before")
    @classmethod
    def _check_renamed(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for old, new in cls._renamed.items():
                if old in data:
                    raise ValueError(f"{old!r} was renamed to {new!r}")
        return data


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
        None,
        description="Keep only these categories (default: all 14).",
        json_schema_extra=_choices(CATEGORIES),
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
# rollout.selection: the paper's rule and its two ablations (spark_core/synthesis/selection.py)
SelectionRule = Literal["rarity_first", "lowest_viable", "greedy"]


class RolloutConfig(_Section):
    """Step-wise trajectory synthesis (the SPaRK rollout)."""

    steps: int = Field(5, gt=0, description="Steps rolled per question (T).")
    actions: list[str] = Field(
        default_factory=lambda: list(ACTIONS),
        description="Candidate actions considered at every step: tools plus 'cot'.",
        json_schema_extra={"default": list(ACTIONS), **_choices(ACTIONS)},
    )
    viable_threshold: float = Field(
        6.0, ge=0, le=10, description="Judge score at or above which a candidate is viable."
    )
    selection: SelectionRule = Field(
        "rarity_first",
        description="Which viable candidate a step keeps: the least-used (rarity_first), the "
        "lowest-scoring (lowest_viable) or the top-scored (greedy).",
    )
    shards: int = Field(2, gt=0, description="Question shards processed in parallel.")
    thought_tokens: int = Field(48, gt=0, description="Max new tokens for a step's thought.")
    input_tokens: int = Field(32, gt=0, description="Max new tokens for an action input.")
    observation_chars: int = Field(300, gt=0, description="Observation kept in the state.")
    seed: int = Field(0, description="Seed for sampled generation and no-answer guesses.")
    tool_retries: int = Field(
        0,
        ge=0,
        description="Self-refinement: when a tool call fails, the policy sees the error and "
        "writes a corrected input, run again up to this many times (synthesis: before judging; "
        "evaluation: at the step). 0 = off.",
    )

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
    isolation: Literal["bwrap", "process"] = Field(
        "bwrap",
        description="Sandbox walls: 'bwrap' (bubblewrap namespaces; refuses to start without it) "
        "or 'process' (weaker, process-level only; logs a warning wherever it is used).",
    )


class ModelConfig(_Section):
    """A generator/policy model: local transformers or any OpenAI-compatible server."""

    backend: Literal["hf", "openai"] = Field(
        "hf", description="'hf' (local transformers) or 'openai' (any OpenAI-compatible server)."
    )
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
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="hf backend weights' dtype; 'auto': bfloat16 on a capable GPU."
    )
    max_new_tokens: int = Field(
        64,
        gt=0,
        description="Per-call token limit: `spark generate` uses it; rollout.thought_tokens and "
        "rollout.input_tokens must fit in it.",
    )
    temperature: float = Field(0.0, ge=0, description="0 means greedy decoding.")
    batch_size: int = Field(16, gt=0, description="Generation batch size (hf backend).")
    concurrency: int = Field(16, gt=0, description="Concurrent requests (openai backend).")
    timeout_s: float = Field(60.0, gt=0, description="Per-request timeout (openai backend).")
    max_retries: int = Field(
        5, ge=0, description="Retries of a failed request (openai backend; jittered backoff)."
    )
    price_per_1k_prompt: float | None = Field(
        None, ge=0, description="USD per 1k prompt tokens (default: known OpenAI prices)."
    )
    price_per_1k_completion: float | None = Field(
        None, ge=0, description="USD per 1k completion tokens (default: known OpenAI prices)."
    )
    max_cost_usd: float | None = Field(
        None,
        gt=0,
        description="Stop a stage (resumably) before this model's spend in it would pass this "
        "many USD; needs a known price. Raise it and rerun to go on.",
    )


class JudgeConfig(ModelConfig):
    """The judge that scores every candidate 0-10."""

    max_new_tokens: int = Field(8, gt=0, description="Token limit of a judge reply (a score).")
    attempts: int = Field(3, gt=0, description="Tries for a reply that carries a score.")
    scoring: Literal["auto", "logprobs", "structured", "text"] = Field(
        "auto",
        description="openai judge: how the score is read. 'auto' probes the endpoint once: "
        "logprob expectation, else JSON-schema structured output, else the parsed reply.",
    )
    max_failure_rate: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Stop synthesis early when more than this share of the first "
        "failure_window judgements fail.",
    )
    failure_window: int = Field(20, gt=0, description="Judgements the failure rate is read on.")
    preflight: bool = Field(
        True, description="openai judge: run `spark check judge` before synthesis (cached)."
    )
    mode: Literal["prefix", "batched", "single"] = Field(
        "prefix", description="Local judge: reuse the step's shared prompt prefix (KV cache)."
    )


class RewardsConfig(_Section):
    """Composite reward: quality + diversity + terminal correctness (labeling/rewards.py)."""

    w_quality: float = Field(1.0, description="w_q: weight of the judge's score / 10 per step.")
    w_diversity: float = Field(
        0.5, description="w_d: weight of the rarity bonus of the chosen action per step."
    )
    w_correct: float = Field(
        1.0, description="w_c: weight of the terminal reward (1 if the final answer is correct)."
    )
    rarity_bonus: Literal["one_minus_p", "neg_log_p"] = Field(
        "one_minus_p",
        description="Diversity bonus from the action's running usage share p when it was selected.",
    )
    gamma: float = Field(
        1.0,
        ge=0,
        le=1,
        description="Discount: returns are the discounted mean of the remaining step rewards "
        "plus gamma^(steps left) * correctness (length-neutral at 1).",
    )
    baseline: Literal["step_mean", "global_mean", "none"] = Field(
        "step_mean", description="Subtracted from returns: mean return at the same step index."
    )
    normalize_advantages: bool = Field(
        True, description="Standardise advantages (minus mean, over std) across the run."
    )


class TrainingConfig(_Section):
    """SFT baseline, offline PPO and step-level DPO (LoRA on CPU, QLoRA on CUDA)."""

    _renamed: ClassVar[dict[str, str]] = {"epochs": "training.sft_epochs"}

    quantization: Literal["auto", "none", "4bit"] = Field(
        "auto",
        description="'4bit': QLoRA (CUDA + bitsandbytes); 'none': LoRA on full-precision "
        "weights; 'auto': 4bit where it can run, else none.",
    )
    lora_r: int = Field(8, gt=0, description="LoRA rank r of every adapted linear layer.")
    lora_alpha: int = Field(16, gt=0, description="LoRA scaling alpha (the update is alpha/r).")
    lora_dropout: float = Field(
        0.0, ge=0, lt=1, description="0 keeps PPO's ratio exactly 1 at the start of an epoch."
    )
    learning_rate: float = Field(1e-4, gt=0, description="AdamW learning rate (constant).")
    sft_epochs: int = Field(
        1, gt=0, description="SFT baseline epochs over its data (PPO's are ppo_epochs)."
    )
    batch_size: int = Field(4, gt=0, description="Examples per device per micro-batch.")
    grad_accum: int = Field(1, gt=0, description="Micro-batches per optimizer step.")
    max_seq_len: int = Field(
        256,
        gt=0,
        description="Token limit of a training example; longer ones lose their earliest "
        "steps first (rl/data.py fit).",
    )
    clip_eps: float = Field(0.2, gt=0, description="PPO clip range epsilon.")
    kl_coef: float = Field(0.05, ge=0, description="beta: weight of KL(policy || reference).")
    kl_estimator: Literal["k1", "k3"] = Field(
        "k3", description="Schulman's KL estimator: k1 (log-ratio) or k3 (unbiased, >= 0)."
    )
    entropy_coef: float = Field(0.0, ge=0, description="Weight of the PPO entropy bonus.")
    ppo_epochs: int = Field(2, gt=0, description="PPO epochs over the logged data.")
    old_logprobs: Literal["behaviour", "refresh"] = Field(
        "behaviour",
        description="pi_old of the PPO ratio: the behaviour log-probs stored at synthesis (true "
        "offline PPO), or the current policy at each epoch start (for generators without "
        "log-probs, e.g. an OpenAI server).",
    )
    sft_data: Literal["selected", "greedy"] = Field(
        "selected",
        description="SFT baseline data: the selected (rarity-first) steps SPaRK trains on, or "
        "the judge's top-scored candidate of each step.",
    )
    candidates: Literal["chosen", "all"] = Field(
        "chosen",
        description="PPO on the chosen steps, or on all judged candidates with "
        "group-relative advantages.",
    )
    trainers: list[Literal["sft", "ppo", "dpo"]] = Field(
        default_factory=lambda: ["sft", "ppo"],
        description="Adapters to train: the SFT baseline, SPaRK's offline PPO (evaluated as the "
        "'spark' policy) and step-level DPO on the candidate pool's judged pairs.",
        json_schema_extra={"default": ["sft", "ppo"], "uniqueItems": True},
    )
    # DPO (trainers: dpo): pairs of candidates for the same state, from the candidate pool
    dpo_score_margin: float = Field(
        1.0,
        ge=0,
        description="DPO: keep a step's pair (selected candidate over the lowest-scored one) "
        "only when their judge scores differ by at least this much.",
    )
    dpo_rarity_margin: float | None = Field(
        None,
        ge=0,
        description="DPO, off when empty: also prefer the selected candidate over a viable one "
        "whose action synthesis selected more often, when that one scores at most this much "
        "higher.",
    )
    dpo_beta: float = Field(
        0.1, gt=0, description="DPO beta: how far the policy may move from the reference."
    )
    dpo_epochs: int = Field(1, gt=0, description="DPO epochs over the pairs.")
    max_steps: int = Field(-1, description="Stop after this many optimizer steps (-1: all epochs).")
    logging_steps: int = Field(1, gt=0, description="Log training metrics every N steps.")
    save_steps: int = Field(50, gt=0, description="Checkpoint every N steps (resume after a kill).")
    seed: int = Field(0, description="Seed of adapter init and data order.")


SAMPLED_POLICY = "base@T"  # the base model sampled at evaluation.sampling_temperature
# The one mapping from a trainer (training.trainers) to the policy its adapter is evaluated
# as, which also names its artifact folder: PPO's adapter is SPaRK's policy, "spark".
TRAINED_POLICY = {"sft": "sft", "ppo": "spark", "dpo": "dpo"}


class EvaluationConfig(_Section):
    """Held-out evaluation of base, SFT and SPaRK policies (plus any extra ones)."""

    steps: int = Field(5, gt=0, description="Maximum policy steps per question.")
    policies: list[Literal["base", "base@T", "sft", "spark", "dpo"]] = Field(
        default_factory=lambda: ["base", SAMPLED_POLICY, "sft", "spark"],
        description="Built-in policies: the untrained generator (greedy), the untrained "
        "generator sampled at sampling_temperature (base@T, the high-temperature baseline), "
        "and the trained adapters (each needs its trainer in training.trainers).",
        json_schema_extra={
            "default": ["base", SAMPLED_POLICY, "sft", "spark"],
            "uniqueItems": True,
        },
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
    bootstrap_samples: int = Field(
        1000, gt=0, description="Bootstrap resamples for the confidence intervals."
    )
    merge_adapters: bool = Field(
        True,
        description="Evaluate hf adapters merged into a copy of the base weights: base-model "
        "speed for one extra copy of the weights per adapter policy.",
    )
    seed: int = Field(
        0, description="Seed of sampled policies and of the guess when no answer is read."
    )


class RuntimeConfig(_Section):
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


GUARD_FIELDS = {"max_cost_usd", "max_failure_rate", "failure_window", "preflight"}


class RunConfig(_Section):
    """Everything that defines a run; sections map one-to-one onto stages."""

    data: DataConfig = Field(
        default_factory=DataConfig, description="Questions: source, sampling, train/eval split."
    )
    rollout: RolloutConfig = Field(
        default_factory=RolloutConfig, description="Synthesis: steps, actions, selection rule."
    )
    tools: ToolsConfig = Field(
        default_factory=ToolsConfig, description="Tool execution and sandbox limits."
    )
    generator: ModelConfig = Field(
        default_factory=ModelConfig, description="The model that writes thoughts and inputs."
    )
    judge: JudgeConfig = Field(
        default_factory=JudgeConfig, description="The model that scores each candidate 0-10."
    )
    rewards: RewardsConfig = Field(
        default_factory=RewardsConfig, description="Composite reward, returns and advantages."
    )
    training: TrainingConfig = Field(
        default_factory=TrainingConfig, description="SFT baseline, offline PPO and DPO adapters."
    )
    evaluation: EvaluationConfig = Field(
        default_factory=EvaluationConfig, description="Held-out evaluation of the policies."
    )
    runtime: RuntimeConfig = Field(
        default_factory=RuntimeConfig, description="Run folder, artifact root, task runner."
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
        trained = {TRAINED_POLICY[t]: t for t in self.training.trainers}
        for trainer, policy in TRAINED_POLICY.items():
            if policy in self.evaluation.policies and policy not in trained:
                raise ValueError(
                    f"evaluation.policies has {policy!r}, whose adapter the {trainer!r} trainer "
                    f"writes, but training.trainers is {self.training.trainers}: add "
                    f"{trainer!r} there or drop {policy!r}"
                )
        return self

    def section(self, name: str) -> dict[str, Any]:
        """A JSON-able dict of one section, the unit that stage cache keys hash. Guard fields
        (cost limits, failure policy, preflight) are left out: they decide whether a stage
        goes on, never what it writes, so raising a limit resumes the same stage."""
        section = getattr(self, name)
        return section.model_dump(
            mode="json", exclude=GUARD_FIELDS & set(type(section).model_fields)
        )


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
