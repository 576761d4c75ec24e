"""The ``training`` section: the SFT baseline, offline PPO and step-level DPO adapters (the
trainers in ``spark_core/training/``)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from spark_core.config.section import Section


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
