"""The ``training`` section: the SFT baseline, offline PPO and step-level DPO adapters (the
trainers in ``spark_core/training/``). What every trainer shares (the optimizer, batches,
sequence length, steps, seeds, quantization) is at ``training.*``; the LoRA adapter is
``training.lora``; what one trainer alone reads is in its group, ``training.sft``,
``training.ppo`` and ``training.dpo``, named without a prefix (``training.ppo.epochs``)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from spark_core.config.section import Section


class LoraSettings(Section):
    """The LoRA adapter every trainer trains (on the 4-bit base under QLoRA)."""

    r: int = Field(8, gt=0, description="LoRA rank r of every adapted linear layer.")
    alpha: int = Field(16, gt=0, description="LoRA scaling alpha (the update is alpha/r).")
    dropout: float = Field(
        0.0, ge=0, lt=1, description="0 keeps PPO's ratio exactly 1 at the start of an epoch."
    )


class SFTSettings(Section):
    """The SFT baseline (trainers: sft)."""

    epochs: int = Field(1, gt=0, description="SFT baseline epochs over its data.")
    data: Literal["selected", "greedy"] = Field(
        "selected",
        description="SFT baseline data: the selected (rarity-first) steps SPaRK trains on, or "
        "the judge's top-scored candidate of each step.",
    )


class PPOSettings(Section):
    """SPaRK's offline PPO (trainers: ppo)."""

    # "chosen" named the picked candidate; synthesis calls it "selected" (DPO's "chosen" is
    # the preferred side of a pair)
    _renamed_values: ClassVar[dict[str, dict[str, str]]] = {"candidates": {"chosen": "selected"}}

    epochs: int = Field(2, gt=0, description="PPO epochs over the logged data.")
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
    candidates: Literal["selected", "all"] = Field(
        "selected",
        description="PPO on the selected steps, or on all judged candidates with "
        "group-relative advantages.",
    )


class DPOSettings(Section):
    """Step-level DPO (trainers: dpo): pairs of candidates for the same state, from the
    candidate pool."""

    score_margin: float = Field(
        1.0,
        ge=0,
        description="Keep a step's pair (selected candidate over the lowest-scored one) only "
        "when their judge scores differ by at least this much.",
    )
    rarity_margin: float | None = Field(
        None,
        ge=0,
        description="Off when empty: also prefer the selected candidate over a viable one "
        "whose action synthesis selected more often, when that one scores at most this much "
        "higher.",
    )
    beta: float = Field(
        0.1, gt=0, description="DPO beta: how far the policy may move from the reference."
    )
    epochs: int = Field(1, gt=0, description="DPO epochs over the pairs.")


# every flat key of the section before it was grouped -> where it lives now
MOVED = {
    "epochs": "training.sft.epochs",  # renamed to sft_epochs first, then grouped
    "lora_r": "training.lora.r",
    "lora_alpha": "training.lora.alpha",
    "lora_dropout": "training.lora.dropout",
    "sft_epochs": "training.sft.epochs",
    "sft_data": "training.sft.data",
    "ppo_epochs": "training.ppo.epochs",
    **{
        name: f"training.ppo.{name}"
        for name in PPOSettings.model_fields
        if name != "epochs"  # clip_eps, kl_coef, ..., candidates: same name, one level down
    },
    **{f"dpo_{name}": f"training.dpo.{name}" for name in DPOSettings.model_fields},
}


class TrainingConfig(Section):
    """SFT baseline, offline PPO and step-level DPO (LoRA on CPU, QLoRA on CUDA)."""

    _moved: ClassVar[dict[str, str]] = MOVED

    trainers: list[Literal["sft", "ppo", "dpo"]] = Field(
        default_factory=lambda: ["sft", "ppo"],
        description="Adapters to train: the SFT baseline, SPaRK's offline PPO (evaluated as the "
        "'ppo' policy) and step-level DPO on the candidate pool's judged pairs; each reads "
        "its own group below (sft, ppo, dpo) and the shared settings here.",
        json_schema_extra={"default": ["sft", "ppo"], "uniqueItems": True},
    )
    quantization: Literal["auto", "none", "4bit"] = Field(
        "auto",
        description="'4bit': QLoRA (CUDA + bitsandbytes); 'none': LoRA on full-precision "
        "weights; 'auto': 4bit where it can run, else none.",
    )
    learning_rate: float = Field(1e-4, gt=0, description="AdamW learning rate (constant).")
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
    lora: LoraSettings = Field(
        default_factory=LoraSettings,
        title="LoRA",
        description="The LoRA adapter (rank, alpha, dropout) every trainer trains.",
    )
    sft: SFTSettings = Field(
        default_factory=SFTSettings,
        title="SFT baseline",
        description="The SFT baseline (trainers: sft): its epochs and data.",
    )
    ppo: PPOSettings = Field(
        default_factory=PPOSettings,
        title="Offline PPO",
        description="SPaRK's offline PPO (trainers: ppo): epochs, clip, KL penalty, pi_old.",
    )
    dpo: DPOSettings = Field(
        default_factory=DPOSettings,
        title="Step-level DPO",
        description="Step-level DPO (trainers: dpo): pair margins, beta, epochs.",
    )

    def seed_list(self) -> list[int]:
        """The training seeds: ``seeds``, or ``[seed]`` when it is not set."""
        return list(self.seeds) if self.seeds else [self.seed]
