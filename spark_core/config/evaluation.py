"""The ``evaluation`` section, and the names of the policies it evaluates: the sampled base
model and the policy each trainer's adapter is evaluated as."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from spark_core.config.section import Section
from spark_core.config.stages import ModelConfig

SAMPLED_POLICY = "base@T"  # the base model sampled at each of evaluation.temperatures
# A trainer's adapter (training.trainers) is evaluated as the policy of the trainer's name,
# which also names its artifact folder: PPO's adapter (SPaRK's method) is the policy "ppo".
TRAINED_POLICIES = ("sft", "ppo", "dpo")


class EvaluationConfig(Section):
    """Held-out evaluation of the base, SFT and PPO (SPaRK) policies (plus any extra ones)."""

    _renamed: ClassVar[dict[str, str]] = {
        "sampling_temperature": "evaluation.temperatures (a list, e.g. [1.0])"
    }
    # a trained policy is named by its trainer (sft, ppo, dpo): PPO's was "spark"
    _renamed_values: ClassVar[dict[str, dict[str, str]]] = {"policies": {"spark": "ppo"}}

    steps: int = Field(5, gt=0, description="Maximum policy steps per question.")
    policies: list[Literal["base", "base@T", "sft", "ppo", "dpo"]] = Field(
        default_factory=lambda: ["base", SAMPLED_POLICY, "sft", "ppo"],
        description="Built-in policies: the untrained generator (greedy), the untrained "
        "generator sampled at each of temperatures (base@T, the high-temperature baselines), "
        "and the trained adapters (each needs its trainer in training.trainers).",
        json_schema_extra={
            "default": ["base", SAMPLED_POLICY, "sft", "ppo"],
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
        "together): ppo's (SPaRK's) accuracy non-inferior to base / SFT, its common-state "
        "tool-selection entropy above base / SFT / each base@T sampling baseline.",
    )
    noninferiority_margin: float = Field(
        0.02,
        ge=0,
        lt=1,
        description="Non-inferiority margin of the accuracy claims (0.02 = 2 points): ppo "
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
