"""One config section per stage: data, rollout, tools, models, rewards, training, evaluation."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from spark_core import CATEGORIES
from spark_core.config.section import Section, choices


class DataConfig(Section):
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
        json_schema_extra=choices(CATEGORIES),
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
    eval_total: int | None = Field(
        None,
        gt=0,
        description="Evaluate on a separate held-out pool of this many questions, drawn "
        "(stratified by category size) from the questions *not* sampled, so every sampled "
        "question is synthesised; replaces eval_fraction (leave that unset or 0).",
    )
    seed: int = Field(0, description="Seed for sampling and the train/eval split.")

    @model_validator(mode="after")
    def _check(self) -> DataConfig:
        if self.per_category is not None and self.total is not None:
            raise ValueError("set at most one of data.per_category and data.total")
        if self.eval_total is not None and "eval_fraction" in self.model_fields_set:
            if self.eval_fraction:
                raise ValueError(
                    "data.eval_total (a separate held-out pool) replaces data.eval_fraction: "
                    "set data.eval_fraction to 0 or remove it"
                )
        unknown = sorted(set(self.categories or ()) - set(CATEGORIES))
        if unknown:
            raise ValueError(
                f"data.categories has unknown categories {unknown}; known: {list(CATEGORIES)}"
            )
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
# rollout.selection: the paper's literal rule (lowest_viable) and its two ablations
# (spark_core/synthesis/selection.py)
SelectionRule = Literal["rarity_first", "lowest_viable", "greedy"]


class RolloutConfig(Section):
    """Step-wise trajectory synthesis (the SPaRK rollout)."""

    steps: int = Field(5, gt=0, description="Steps rolled per question (T).")
    actions: list[str] = Field(
        default_factory=lambda: list(ACTIONS),
        description="Candidate actions considered at every step: tools plus 'cot'.",
        json_schema_extra={"default": list(ACTIONS), **choices(ACTIONS)},
    )
    viable_threshold: float = Field(
        6.0,
        ge=0,
        le=10,
        description="A candidate is viable when its judge score is strictly above this "
        "(the paper: 'scoring above a threshold of 6.0').",
    )
    selection: SelectionRule = Field(
        "rarity_first",
        description="Which viable candidate a step keeps: the lowest-scoring (lowest_viable, the "
        "paper's method sentence), the least-used so far (rarity_first, an ablation) or the "
        "top-scored (greedy).",
    )
    thoughts: Literal["shared", "per_action"] = Field(
        "shared",
        description="One thought per step shared by the candidates (shared), or one per "
        "candidate written with its action fixed in the prompt (per_action: a generation per "
        "candidate instead of per question; the summary's thought-action mismatch rate says "
        "what it buys).",
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


class ToolsConfig(Section):
    """Tool execution and its sandbox limits."""

    corpus: str = Field(
        "bundled", description="knowledge_search corpus: 'bundled' or a .parquet/.jsonl path."
    )
    parallelism: int = Field(2, gt=0, description="Concurrent tool calls in a batch.")
    cpu_seconds: float = Field(2.0, gt=0, description="CPU-time limit per sandboxed call.")
    wall_seconds: float = Field(5.0, gt=0, description="Wall-time limit per sandboxed call.")
    memory_mb: int = Field(
        512,
        gt=0,
        description="Memory one sandboxed call may allocate by any mechanism: the cap of its "
        "worker's memory cgroup above the worker's own footprint, and the size of its /tmp "
        "and its address-space limit.",
    )
    max_output_chars: int = Field(2000, gt=0, description="Tool output is truncated to this.")
    isolation: Literal["bwrap", "process"] = Field(
        "bwrap",
        description="Sandbox walls: 'bwrap' (bubblewrap namespaces; refuses to start without it) "
        "or 'process' (weaker, process-level only; logs a warning wherever it is used).",
    )


class ModelConfig(Section):
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
    grade: Literal["expected", "integer"] = Field(
        "expected",
        description="The score selection and rewards use: the log-prob expected score where the "
        "judge gives log-probs ('expected'), or the judge's stated integer grade 0-10 "
        "('integer', as the paper's judge). Both are stored in `scores` when available.",
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
    local_batching: Literal["prefix", "batched", "single"] = Field(
        "prefix",
        description="Local judge, per_candidate: reuse the step's shared prompt prefix (KV "
        "cache), or plain batches, or one candidate at a time.",
    )
    mode: Literal["per_candidate", "per_state"] = Field(
        "per_candidate",
        description="'per_candidate': one judge call per candidate; 'per_state': one call per "
        "state, its shared context once and the candidates as a numbered list, one integer "
        "0-10 per candidate as JSON (a missing score fails only that candidate).",
    )
    batch: bool = Field(
        False,
        description="openai judge: submit each synthesis step's judge requests as one job of "
        "the Batch API (/v1/files + /v1/batches) at batch prices; resumes a killed run's job.",
    )
    batch_poll_max_s: float = Field(
        60.0, gt=0, description="Longest wait between two status polls of a batch job."
    )
    batch_timeout_s: float = Field(
        86400.0,
        gt=0,
        description="Give up waiting on a batch job after this long and judge its requests "
        "directly (under the cost guard).",
    )
    price_per_1k_cached_prompt: float | None = Field(
        None,
        ge=0,
        description="USD per 1k prompt tokens the provider served from its prompt cache "
        "(usage.prompt_tokens_details.cached_tokens); default: known OpenAI prices.",
    )
    price_per_1k_prompt_batch: float | None = Field(
        None, ge=0, description="USD per 1k prompt tokens in a batch job (default: known prices)."
    )
    price_per_1k_completion_batch: float | None = Field(
        None,
        ge=0,
        description="USD per 1k completion tokens in a batch job (default: known prices).",
    )

    @model_validator(mode="before")
    @classmethod
    def _local_batching_moved(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("mode") in ("prefix", "batched", "single"):
            raise ValueError(
                f"judge.mode {data['mode']!r} is now judge.local_batching: {data['mode']!r} "
                "(judge.mode is per_candidate or per_state)"
            )
        return data


class RewardsConfig(Section):
    """Composite reward: quality + diversity + terminal correctness (labeling/rewards.py)."""

    w_quality: float = Field(1.0, description="w_q: weight of the judge's score / 10 per step.")
    w_diversity: float = Field(
        0.5, description="w_d: weight of the rarity bonus of the chosen action per step."
    )
    w_correct: float = Field(
        1.0, description="w_c: weight of the terminal reward (1 if the final answer is correct)."
    )
    diversity: Literal["within_state", "running_share"] = Field(
        "within_state",
        description="The diversity term: log share of the most-used viable candidate of the same "
        "state minus log share of the chosen one, at selection time (within_state), or "
        "rarity_bonus of the chosen action's running usage share alone (running_share).",
    )
    rarity_bonus: Literal["one_minus_p", "neg_log_p"] = Field(
        "one_minus_p",
        description="diversity=running_share: the bonus from the action's running usage share p "
        "when it was selected.",
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


class TrainingConfig(Section):
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
    activation_checkpointing: bool = Field(
        True,
        description="Recompute each layer's activations in the backward pass instead of "
        "holding every layer's: training memory of about one layer's activations, for about "
        "a third more compute. Same gradients, so same adapters (QLoRA turns it on anyway).",
    )
    max_seq_len: int = Field(
        256,
        gt=0,
        description="Token limit of a training example; longer ones lose their earliest "
        "steps first (training/data.py fit).",
    )
    clip_eps: float = Field(0.2, gt=0, description="PPO clip range epsilon.")
    kl_coef: float = Field(
        0.05,
        ge=0,
        description="beta: weight of the KL penalty to the reference (the starting beta when "
        "kl_target is set).",
    )
    kl_estimator: Literal["k1", "k3"] = Field(
        "k3",
        description="The KL penalty's estimator, at the logged tokens: k1 (log-ratio) or k3 "
        "(r - log r - 1, >= 0). The exact KL is logged beside it as kl_exact.",
    )
    kl_target: float | None = Field(
        None,
        gt=0,
        description="Adaptive KL penalty (PPO's), off when empty: after each optimizer step "
        "beta is halved when kl_exact < kl_target/1.5 and doubled when > 1.5*kl_target.",
    )
    entropy_coef: float = Field(0.0, ge=0, description="Weight of the PPO entropy bonus.")
    ppo_epochs: int = Field(2, gt=0, description="PPO epochs over the logged data.")
    old_logprobs: Literal["behaviour", "refresh"] = Field(
        "behaviour",
        description="pi_old of the PPO ratio: 'behaviour', the policy that wrote the data "
        "(trust region fixed at the data for every epoch; behaviour_source says where it "
        "comes from), or 'refresh', the policy at each epoch start (standard PPO).",
    )
    behaviour_source: Literal["auto", "reference", "stored"] = Field(
        "auto",
        description="Where 'behaviour' takes pi_beta: 'reference', the base weights (adapter "
        "disabled) scored on each training row under the training precision (right when "
        "these weights wrote the data); 'stored', the log-probs stored at synthesis (another "
        "model wrote the data; rows truncated to fit are left out); 'auto': reference for an "
        "hf generator, stored for openai.",
    )
    behaviour_tolerance: float = Field(
        0.1,
        ge=0,
        description="Warn when the stored synthesis log-probs and pi_beta recomputed under the "
        "training numerics differ by more than this many nats per token on average.",
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
    seeds: list[int] | None = Field(
        None,
        min_length=1,
        description="Train every trainer once per seed (adapter init and data order); the "
        "report pools a policy's seeds, its CIs include between-seed variance. Empty: "
        "[seed].",
        json_schema_extra={"uniqueItems": True},
    )

    def seed_list(self) -> list[int]:
        """The training seeds: ``seeds``, or ``[seed]`` when it is not set."""
        return list(self.seeds) if self.seeds else [self.seed]


SAMPLED_POLICY = "base@T"  # the base model sampled at each of evaluation.temperatures
# The one mapping from a trainer (training.trainers) to the policy its adapter is evaluated
# as, which also names its artifact folder: PPO's adapter is SPaRK's policy, "spark".
TRAINED_POLICY = {"sft": "sft", "ppo": "spark", "dpo": "dpo"}


class EvaluationConfig(Section):
    """Held-out evaluation of base, SFT and SPaRK policies (plus any extra ones)."""

    _renamed: ClassVar[dict[str, str]] = {
        "sampling_temperature": "evaluation.temperatures (a list, e.g. [1.0])"
    }

    steps: int = Field(5, gt=0, description="Maximum policy steps per question.")
    policies: list[Literal["base", "base@T", "sft", "spark", "dpo"]] = Field(
        default_factory=lambda: ["base", SAMPLED_POLICY, "sft", "spark"],
        description="Built-in policies: the untrained generator (greedy), the untrained "
        "generator sampled at each of temperatures (base@T, the high-temperature baselines), "
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
    temperatures: list[float] = Field(
        default_factory=lambda: [0.7, 1.0, 1.3, 1.6],
        description="Temperatures of the base@T sampling baselines: base@T in policies runs "
        "the base model sampled at each (base@0.7, base@1, ...).",
    )
    common_states: bool = Field(
        True,
        description="Score every policy's exact P(action | state) on one shared state per "
        "held-out question (its step-1 state: the prompt, no rollout): one forward pass per "
        "question and policy, on every held-out question.",
    )
    rollout_questions: int | None = Field(
        None,
        gt=0,
        description="Full rollouts (accuracy, on-policy entropy) on a subset of this many "
        "held-out questions, the same number from each category (a stratified subset of the "
        "pool the common states use); empty: every held-out question.",
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

    claims: list[
        Literal[
            "accuracy_noninferior_base",
            "accuracy_noninferior_sft",
            "entropy_above_base",
            "entropy_above_sft",
            "entropy_above_sampling",
        ]
    ] = Field(
        default_factory=lambda: [
            "accuracy_noninferior_base",
            "accuracy_noninferior_sft",
            "entropy_above_base",
            "entropy_above_sft",
            "entropy_above_sampling",
        ],
        description="The pre-declared family of claims the report tests (Holm-adjusted "
        "together): SPaRK's accuracy non-inferior to base / SFT, its common-state "
        "tool-selection entropy above base / SFT / each base@T sampling baseline.",
    )
    noninferiority_margin: float = Field(
        0.02,
        ge=0,
        lt=1,
        description="Non-inferiority margin of the accuracy claims (0.02 = 2 points): SPaRK "
        "is non-inferior when the 95% CI of its accuracy minus the other's lies above -margin.",
    )
    alpha: float = Field(
        0.05, gt=0, lt=1, description="Family-wise error rate of the claims (Holm)."
    )
    power: float = Field(
        0.8,
        gt=0,
        lt=1,
        description="Power at which an inconclusive claim's needed sample size is computed.",
    )

    @model_validator(mode="after")
    def _check_temperatures(self) -> EvaluationConfig:
        bad = [t for t in self.temperatures if t <= 0]
        if bad or not self.temperatures:
            raise ValueError(
                f"evaluation.temperatures must be > 0 (got {self.temperatures}); greedy "
                "decoding is the base policy"
            )
        if len(set(self.temperatures)) != len(self.temperatures):
            raise ValueError(f"evaluation.temperatures repeats a value: {self.temperatures}")
        return self
