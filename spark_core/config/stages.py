"""The config sections of the data and synthesis stages: data, rollout, tools, the models
(generator, judge) and rewards. Training's section is in ``config/training.py``, evaluation's
in ``config/evaluation.py``."""

from __future__ import annotations

from typing import Any, Literal

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
        "directly (under the cost limit).",
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
        0.5, description="w_d: weight of the rarity bonus of the selected action per step."
    )
    w_correct: float = Field(
        1.0, description="w_c: weight of the terminal reward (1 if the final answer is correct)."
    )
    diversity: Literal["within_state", "running_share"] = Field(
        "within_state",
        description="The diversity term: log share of the most-used viable candidate of the same "
        "state minus log share of the selected one, at selection time (within_state), or "
        "rarity_bonus of the selected action's running usage share alone (running_share).",
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
