"""Offline PPO on logged trajectories, as a ``transformers.Trainer`` subclass (TRL's shape:
a config dataclass and a trainer overriding ``compute_loss``), so checkpointing, resume,
gradient accumulation, mixed precision and multi-GPU (``accelerate launch``) come from the
library.

The policy is a PEFT model. The reference policy is the same model with its adapter disabled,
so no second copy of the weights is held. Reference log-probs never change and are computed
once. pi_old is, with ``old_logprobs="behaviour"``, the behaviour policy: the log-probs stored
at synthesis under the model that wrote the data, so the ratio is the true importance ratio
pi_theta / pi_beta and clipping bounds the drift from the data's policy over every epoch. With
``"refresh"`` it is the policy at the start of each PPO epoch (one forward pass without
gradient per example per epoch), for data whose generator gave no log-probs.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch.utils.data import DataLoader
from transformers import Trainer, TrainerCallback, TrainingArguments

from spark_core.config import TrainingConfig
from spark_core.rl.data import PPOCollator
from spark_core.rl.ppo_loss import ppo_loss, token_logprobs


def _term(name: str) -> Any:
    """A PPO term's dataclass field: no default (it always comes from ``training``) and
    ``training``'s own description as its help, so neither can drift from the config."""
    return field(metadata={"help": TrainingConfig.model_fields[name].description})


@dataclass(kw_only=True)
class OfflinePPOConfig(TrainingArguments):
    """``TrainingArguments`` plus the PPO terms, built with ``from_training``: the terms
    have no defaults here, ``training`` (config.py) is their one source.
    ``num_train_epochs`` is the number of PPO epochs over the logged data."""

    PPO_TERMS: ClassVar[tuple[str, ...]] = (
        "clip_eps",
        "kl_coef",
        "kl_estimator",
        "entropy_coef",
        "old_logprobs",
    )
    clip_eps: float = _term("clip_eps")
    kl_coef: float = _term("kl_coef")
    kl_estimator: str = _term("kl_estimator")
    entropy_coef: float = _term("entropy_coef")
    old_logprobs: str = _term("old_logprobs")
    remove_unused_columns: bool = field(default=False, metadata={"help": "Keep PPO columns."})

    @classmethod
    def from_training(cls, training: TrainingConfig, **trainer_args: Any) -> OfflinePPOConfig:
        """The PPO terms from ``training``; ``trainer_args`` are ``TrainingArguments``
        only (output folder, epochs, batch size, precision ...)."""
        clash = set(cls.PPO_TERMS) & set(trainer_args)
        if clash:
            raise TypeError(f"PPO terms {sorted(clash)} come from TrainingConfig, not kwargs")
        return cls(**{n: getattr(training, n) for n in cls.PPO_TERMS}, **trainer_args)


class _RefreshOldLogprobs(TrainerCallback):
    def __init__(self, trainer: OfflinePPOTrainer):
        self.trainer = trainer

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.trainer.refresh_logprobs(old=self.trainer.args.old_logprobs == "refresh")


class OfflinePPOTrainer(Trainer):
    """Trains a PEFT policy with the clipped surrogate + KL objective on fixed examples
    (dicts with ``input_ids``, ``completion_mask``, ``advantage``, ``index``)."""

    def __init__(
        self,
        model: Any,
        args: OfflinePPOConfig,
        train_dataset: list[dict[str, Any]],
        processing_class: Any,
        **kwargs: Any,
    ):
        if not hasattr(model, "disable_adapter"):
            raise TypeError(
                "OfflinePPOTrainer needs a PEFT model: the reference policy is the "
                "base model with the adapter disabled"
            )
        super().__init__(
            model=model,
            args=args,
            train_dataset=train_dataset,
            data_collator=PPOCollator(processing_class.pad_token_id),
            processing_class=processing_class,
            **kwargs,
        )
        self.model_accepts_loss_kwargs = False  # the loss is already a mean: scale per micro-batch
        self.add_callback(_RefreshOldLogprobs(self))
        self._old: dict[int, torch.Tensor] = {}
        self._ref: dict[int, torch.Tensor] = {}
        self._stats: dict[str, list[float]] = defaultdict(list)
        if args.old_logprobs not in ("behaviour", "refresh"):
            raise ValueError(
                f"old_logprobs must be 'behaviour' or 'refresh', got {args.old_logprobs!r}"
            )
        if args.old_logprobs == "behaviour":
            missing = sum(e.get("behaviour_logprobs") is None for e in train_dataset)
            if missing:
                raise ValueError(
                    f"{missing} of {len(train_dataset)} examples carry no behaviour log-probs "
                    "(the generator gave none, or these are pooled candidates); set "
                    "training.old_logprobs=refresh"
                )
            self._old = {
                e["index"]: torch.tensor(e["behaviour_logprobs"], dtype=torch.float32)
                for e in train_dataset
            }

    # -- log-probs of the logged actions --------------------------------------------------
    def _logprobs(self, model: Any, batch: dict[str, torch.Tensor]):
        """Log-probs and entropy at the completion tokens only. The LM head runs just over the
        window that holds every row's completion (``logits_to_keep``): prompts are most of the
        tokens, and the vocabulary projection is a large share of a small model's cost."""
        ids, attention = batch["input_ids"], batch["attention_mask"]
        mask = batch["completion_mask"] * attention
        first = max(1, int(mask.float().argmax(dim=1).min()))
        keep = ids.shape[1] - first + 1
        out = model(input_ids=ids, attention_mask=attention, logits_to_keep=keep)
        logprobs, entropy = token_logprobs(out.logits, ids[:, first - 1 :])
        return logprobs, entropy, mask[:, first:]

    def _adapter_is_identity(self) -> bool:
        """A fresh LoRA adapter (B = 0) leaves the base model unchanged: then the reference
        log-probs equal the policy's and one pass gives both."""
        weights = [p for n, p in self.model.named_parameters() if "lora_B" in n]
        return bool(weights) and all(not p.any() for p in weights)

    @torch.no_grad()
    def refresh_logprobs(self, old: bool = True) -> None:
        """Old log-probs from the current policy (when ``old``); reference log-probs (adapter
        disabled) the first time only."""
        if not old and self._ref:
            return
        model = self.model
        same_as_ref = self._adapter_is_identity()
        loader = DataLoader(
            self.train_dataset,
            batch_size=self.args.per_device_train_batch_size,
            collate_fn=self.data_collator,
        )
        for batch in loader:
            batch = {k: v.to(self.args.device) for k, v in batch.items()}
            indices = batch["index"].tolist()
            need_ref = any(i not in self._ref for i in indices)  # once per example, ever
            if not old and not need_ref:
                continue
            current, _, mask = self._logprobs(model, batch)
            ref = None
            if need_ref:
                if same_as_ref:
                    ref = current
                else:
                    with model.disable_adapter():
                        ref, _, _ = self._logprobs(model, batch)
            for row, index in enumerate(indices):
                keep = mask[row].bool()
                if old:
                    self._old[index] = current[row][keep].float().cpu()
                if ref is not None:
                    self._ref[index] = ref[row][keep].float().cpu()

    def _stored(self, table: dict[int, torch.Tensor], index: torch.Tensor, mask: torch.Tensor):
        """Stored per-example completion log-probs, laid out like this batch's window."""
        out = torch.zeros(mask.shape, dtype=torch.float32, device=self.args.device)
        out[mask.bool()] = torch.cat([table[i] for i in index.tolist()]).to(self.args.device)
        return out

    # -- the loss ---------------------------------------------------------------------------
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if not self._old or not self._ref:  # e.g. training_step called outside of train()
            self.refresh_logprobs(old=not self._old)
        logprobs, entropy, mask = self._logprobs(model, inputs)
        old = self._stored(self._old, inputs["index"], mask)
        ref = self._stored(self._ref, inputs["index"], mask)
        old = torch.where(torch.isnan(old), ref, old)  # tokens the behaviour model did not write
        args: OfflinePPOConfig = self.args
        loss, stats = ppo_loss(
            logprobs=logprobs,
            old_logprobs=old,
            ref_logprobs=ref,
            advantages=inputs["advantages"],
            mask=mask,
            clip_eps=args.clip_eps,
            kl_coef=args.kl_coef,
            kl_estimator=args.kl_estimator,
            entropy_coef=args.entropy_coef,
            entropy=entropy,
        )
        for name, value in vars(stats).items():
            self._stats[name if name != "loss" else "ppo_loss"].append(value)
        return (loss, {"logprobs": logprobs}) if return_outputs else loss

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        """Add the mean of every PPO diagnostic since the last log (KL, clip fraction, ...)."""
        if self._stats and "loss" in logs:
            for name, values in self._stats.items():
                if name == "ratio_min":
                    logs[name] = min(values)
                elif name == "ratio_max":
                    logs[name] = max(values)
                else:
                    logs[name] = sum(values) / len(values)
            self._stats.clear()
        super().log(logs, *args, **kwargs)
