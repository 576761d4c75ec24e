"""Offline PPO on logged trajectories, as a ``transformers.Trainer`` subclass (TRL's shape:
a config dataclass and a trainer overriding ``compute_loss``), so checkpointing, resume,
gradient accumulation, mixed precision and multi-GPU (``accelerate launch``) come from the
library.

The policy is a PEFT model. The reference policy is the same model with its adapter disabled,
so no second copy of the weights is held; every micro-batch runs it once without gradient, on
exactly the tokens (the fitted, truncated row) and under the numerics (4-bit, bf16, fp32,
autocast) of the policy's own pass. That gives both the exact KL(pi_theta || pi_ref) over the
vocabulary and, in the normal case, pi_old:

- ``old_logprobs="behaviour"``: pi_old is the behaviour policy pi_beta, so clipping bounds the
  drift from the data's policy over every epoch. With ``behaviour_source="reference"`` (the
  base weights wrote the data: an hf generator) pi_beta *is* the reference pass, and the ratio
  is exactly 1 before the first step whatever the precision and truncation; the log-probs
  stored at synthesis are then only a check (``behaviour_gap_mean/max``). With ``"stored"``
  (another model wrote the data) the stored log-probs are pi_beta; rows truncated to fit are
  left out upstream (``ppo_examples(stored_pi_beta=True)``), as they were scored on another row.
- ``old_logprobs="refresh"`` (standard PPO): pi_old is the policy at each epoch start; while
  the adapter is still the identity that is the reference pass too, later epochs take it in
  one pass without gradient at the epoch's start.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch.utils.data import DataLoader
from transformers import Trainer, TrainerCallback, TrainingArguments

from spark_core.config import PPOSettings
from spark_core.training.data import PPOCollator
from spark_core.training.ppo_loss import (
    adaptive_kl_coef,
    exact_kl,
    masked_mean,
    next_token_logp,
    ppo_loss,
)

log = logging.getLogger(__name__)


def _term(name: str) -> Any:
    """A PPO term's dataclass field: no default (it always comes from ``training.ppo``) and
    ``training.ppo``'s own description as its help, so neither can drift from the config."""
    return field(metadata={"help": PPOSettings.model_fields[name].description})


@dataclass(kw_only=True)
class OfflinePPOConfig(TrainingArguments):
    """``TrainingArguments`` plus the PPO terms, built with ``from_training``: the terms
    have no defaults here, ``training.ppo`` (``PPOSettings`` in
    ``spark_core/config/training.py``) is their one source.
    ``num_train_epochs`` is the number of PPO epochs over the logged data.
    ``behaviour_source`` must be resolved ('reference' or 'stored': ``RunConfig.behaviour_source``)
    when ``old_logprobs`` is 'behaviour'."""

    PPO_TERMS: ClassVar[tuple[str, ...]] = (
        "clip_eps",
        "kl_coef",
        "kl_estimator",
        "kl_target",
        "entropy_coef",
        "old_logprobs",
        "behaviour_source",
        "behaviour_tolerance",
    )
    clip_eps: float = _term("clip_eps")
    kl_coef: float = _term("kl_coef")
    kl_estimator: str = _term("kl_estimator")
    kl_target: float | None = _term("kl_target")
    entropy_coef: float = _term("entropy_coef")
    old_logprobs: str = _term("old_logprobs")
    behaviour_source: str = _term("behaviour_source")
    behaviour_tolerance: float = _term("behaviour_tolerance")
    remove_unused_columns: bool = field(default=False, metadata={"help": "Keep PPO columns."})

    @classmethod
    def from_training(cls, ppo: PPOSettings, **trainer_args: Any) -> OfflinePPOConfig:
        """The PPO terms from ``training.ppo``; ``trainer_args`` are ``TrainingArguments``
        only (output folder, epochs, batch size, precision ...)."""
        clash = set(cls.PPO_TERMS) & set(trainer_args)
        if clash:
            raise TypeError(f"PPO terms {sorted(clash)} come from training.ppo, not kwargs")
        return cls(**{n: getattr(ppo, n) for n in cls.PPO_TERMS}, **trainer_args)


class _PPOEvents(TrainerCallback):
    """pi_old at each epoch start, the adaptive KL coefficient after each optimizer step."""

    def __init__(self, trainer: OfflinePPOTrainer):
        self.trainer = trainer

    def on_train_begin(self, args, state, control, **kwargs):
        self.trainer.resume_kl_coef(state.log_history)

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.trainer.start_epoch()

    def on_epoch_end(self, args, state, control, **kwargs):
        self.trainer.warn_behaviour_gap()

    def on_step_end(self, args, state, control, **kwargs):
        self.trainer.adapt_kl_coef()


@dataclass
class Terms:
    """One micro-batch's per-token log-probs, each on the completion window."""

    logprobs: torch.Tensor  # log pi_theta(a|s) (with gradient)
    old_logprobs: torch.Tensor  # log pi_old(a|s)
    ref_logprobs: torch.Tensor  # log pi_ref(a|s): the adapter disabled
    entropy: torch.Tensor  # of pi_theta
    kl_exact: torch.Tensor  # KL(pi_theta || pi_ref) over the vocabulary
    mask: torch.Tensor  # completion tokens


class OfflinePPOTrainer(Trainer):
    """Trains a PEFT policy with the clipped surrogate + KL objective on fixed examples
    (dicts with ``input_ids``, ``completion_mask``, ``advantage``, ``index``; optionally
    ``behaviour_logprobs`` and ``truncated``)."""

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
        self.add_callback(_PPOEvents(self))
        self.kl_coef = args.kl_coef  # beta; moves only with kl_target (adaptive penalty)
        self._step_kl: list[float] = []
        self._stats: dict[str, list[float]] = defaultdict(list)
        # synthesis log-probs of rows scored on exactly this row (not truncated)
        self._stored = {
            e["index"]: torch.tensor(e["behaviour_logprobs"], dtype=torch.float32)
            for e in train_dataset
            if e.get("behaviour_logprobs") is not None and not e.get("truncated")
        }
        self._gap: dict[int, tuple[float, float, int]] = {}  # index -> (sum, max, tokens)
        self._gap_warned = False
        self._old: dict[int, torch.Tensor] = {}
        self._old_is_ref: bool | None = None  # set at each epoch start
        self._check_pi_beta(args, train_dataset)

    def _check_pi_beta(self, args: OfflinePPOConfig, data: list[dict[str, Any]]) -> None:
        if args.old_logprobs not in ("behaviour", "refresh"):
            raise ValueError(
                f"old_logprobs must be 'behaviour' or 'refresh', got {args.old_logprobs!r}"
            )
        if args.old_logprobs == "refresh" or args.behaviour_source == "reference":
            return
        if args.behaviour_source != "stored":
            raise ValueError(
                f"behaviour_source must be resolved to 'reference' or 'stored' "
                f"(RunConfig.behaviour_source()), got {args.behaviour_source!r}"
            )
        missing = sum(e.get("behaviour_logprobs") is None for e in data)
        if missing:
            raise ValueError(
                f"{missing} of {len(data)} examples carry no stored behaviour log-probs (the "
                "generator returned none, or these are pooled candidates), but "
                "training.ppo.behaviour_source is 'stored': set "
                "training.ppo.behaviour_source=reference if generator.name's weights wrote the "
                "data, else training.ppo.old_logprobs=refresh"
            )
        if any(e.get("truncated") for e in data):
            raise ValueError(
                "stored behaviour log-probs on truncated rows were scored on the full state: "
                "build the examples with ppo_examples(..., stored_pi_beta=True)"
            )
        self._old = dict(self._stored)

    # -- log-probs of the logged actions --------------------------------------------------
    def _logprobs(self, model: Any, batch: dict[str, torch.Tensor]):
        """Log-softmax over the vocabulary, log-probs of the logged tokens and the completion
        mask, on the window that holds every row's completion. The LM head runs just over that
        window (``logits_to_keep``): prompts are most of the tokens, and the vocabulary
        projection is a large share of a small model's cost."""
        ids, attention = batch["input_ids"], batch["attention_mask"]
        mask = batch["completion_mask"] * attention
        first = max(1, int(mask.float().argmax(dim=1).min()))
        keep = ids.shape[1] - first + 1
        out = model(input_ids=ids, attention_mask=attention, logits_to_keep=keep)
        logp = next_token_logp(out.logits)
        token_logp = torch.gather(logp, -1, ids[:, first:, None]).squeeze(-1)
        return logp, token_logp, mask[:, first:]

    def _adapter_is_identity(self) -> bool:
        """A fresh LoRA adapter (B = 0) leaves the base model unchanged: pi_theta = pi_ref."""
        weights = [p for n, p in self.model.named_parameters() if "lora_B" in n]
        return bool(weights) and all(not p.any() for p in weights)

    def terms(self, model: Any, inputs: dict[str, torch.Tensor]) -> Terms:
        """pi_theta's pass (with gradient) and the reference pass (adapter disabled, without),
        on the same tokens under the same numerics; pi_old from the reference pass or the
        stored table."""
        if self._old_is_ref is None:  # e.g. compute_loss called outside of train()
            self.start_epoch()
        logp, logprobs, mask = self._logprobs(model, inputs)
        with torch.no_grad(), self.accelerator.unwrap_model(model).disable_adapter():
            ref_logp, ref, _ = self._logprobs(model, inputs)
        with torch.no_grad():
            live = mask.bool()
            kl_exact = torch.zeros(mask.shape, device=logp.device)
            kl_exact[live] = exact_kl(logp.detach()[live], ref_logp[live])
        entropy = -(logp.exp() * logp).sum(dim=-1)
        del ref_logp
        self._check_stored(inputs["index"], ref, mask)
        if self._old_is_ref:
            old = ref
        else:
            old = self._table(self._old, inputs["index"], mask)
            old = torch.where(
                torch.isnan(old), ref, old
            )  # tokens the behaviour model did not write
        return Terms(logprobs, old, ref, entropy, kl_exact, mask)

    def _table(self, table: dict[int, torch.Tensor], index: torch.Tensor, mask: torch.Tensor):
        """Per-example completion log-probs, laid out like this batch's window."""
        out = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device)
        out[mask.bool()] = torch.cat([table[i] for i in index.tolist()]).to(mask.device)
        return out

    # -- pi_old ---------------------------------------------------------------------------
    def start_epoch(self) -> None:
        """pi_old for this epoch: the reference pass (behaviour from the reference, or refresh
        while the adapter is the identity), the stored table, or one pass of the policy."""
        args: OfflinePPOConfig = self.args
        if args.old_logprobs == "behaviour":
            self._old_is_ref = args.behaviour_source == "reference"
        elif self._adapter_is_identity():
            self._old_is_ref = True
        else:
            self._old_is_ref = False
            self._refresh_old()

    @torch.no_grad()
    def _refresh_old(self) -> None:
        """pi_old = the current policy, one pass without gradient (same autocast as training)."""
        for batch in self._batches():
            with self.compute_loss_context_manager():
                _, current, mask = self._logprobs(self.model, batch)
            for row, index in enumerate(batch["index"].tolist()):
                self._old[index] = current[row][mask[row].bool()].float().cpu()

    def _batches(self):
        loader = DataLoader(
            self.train_dataset,
            batch_size=self.args.per_device_train_batch_size,
            collate_fn=self.data_collator,
        )
        for batch in loader:
            yield {k: v.to(self.args.device) for k, v in batch.items()}

    @torch.no_grad()
    def start_ratio_range(self) -> tuple[float, float]:
        """min and max of pi_theta / pi_old over every completion token of the data, as the
        loss would see them now (before the first optimizer step: the invariant is 1)."""
        low, high = math.inf, -math.inf
        self.start_epoch()
        for batch in self._batches():
            with self.compute_loss_context_manager():
                t = self.terms(self.model, batch)
            ratio = torch.exp(t.logprobs - t.old_logprobs)[t.mask.bool()]
            low, high = min(low, ratio.min().item()), max(high, ratio.max().item())
        self._old_is_ref = None
        return low, high

    # -- the stored log-probs as a check ------------------------------------------------------
    def _check_stored(self, index: torch.Tensor, ref: torch.Tensor, mask: torch.Tensor) -> None:
        """|stored - recomputed| of pi_beta, once per example, on rows scored as trained."""
        for row, i in enumerate(index.tolist()):
            if i in self._gap or i not in self._stored:
                continue
            stored = self._stored[i].to(ref.device)
            diff = (stored - ref[row][mask[row].bool()].float()).abs()
            diff = diff[~torch.isnan(diff)]
            if diff.numel():
                self._gap[i] = (diff.sum().item(), diff.max().item(), diff.numel())

    def behaviour_gap(self) -> dict[str, float]:
        """Mean (per token) and max |stored - recomputed| behaviour log-prob, in nats."""
        if not self._gap:
            return {}
        total, tokens = sum(g[0] for g in self._gap.values()), sum(g[2] for g in self._gap.values())
        return {
            "behaviour_gap_mean": total / tokens,
            "behaviour_gap_max": max(g[1] for g in self._gap.values()),
        }

    def warn_behaviour_gap(self) -> None:
        gap = self.behaviour_gap()
        if self._gap_warned or not gap:
            return
        self._gap_warned = True
        tolerance = self.args.behaviour_tolerance
        how = (
            "pi_beta is the reference pass, so the ratio is unaffected; the gap is synthesis "
            "numerics (or other weights) against training's"
            if self.args.behaviour_source == "reference" or self.args.old_logprobs == "refresh"
            else "pi_beta is the stored log-probs: the ratios start this far from 1"
        )
        level = logging.WARNING if gap["behaviour_gap_mean"] > tolerance else logging.INFO
        log.log(
            level,
            "stored behaviour log-probs vs recomputed under training numerics on %d rows: mean "
            "|diff| %.4f, max %.4f nats (training.ppo.behaviour_tolerance %.3g); %s",
            len(self._gap),
            gap["behaviour_gap_mean"],
            gap["behaviour_gap_max"],
            tolerance,
            how,
        )

    # -- adaptive KL coefficient ------------------------------------------------------------
    def adapt_kl_coef(self) -> None:
        """After an optimizer step: beta from the step's exact KL (PPO's adaptive penalty)."""
        target = self.args.kl_target
        if target is not None and self._step_kl:
            kl = sum(self._step_kl) / len(self._step_kl)
            self.kl_coef = adaptive_kl_coef(self.kl_coef, kl, target)
        self._step_kl.clear()

    def resume_kl_coef(self, history: list[dict[str, float]]) -> None:
        """On resume, beta as last logged (it is part of the training state)."""
        logged = [e["kl_coef"] for e in history if "kl_coef" in e]
        if logged and self.args.kl_target is not None:
            self.kl_coef = logged[-1]

    # -- the loss ---------------------------------------------------------------------------
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        t = self.terms(model, inputs)
        args: OfflinePPOConfig = self.args
        loss, stats = ppo_loss(
            logprobs=t.logprobs,
            old_logprobs=t.old_logprobs,
            ref_logprobs=t.ref_logprobs,
            advantages=inputs["advantages"],
            mask=t.mask,
            clip_eps=args.clip_eps,
            kl_coef=self.kl_coef,
            kl_estimator=args.kl_estimator,
            entropy_coef=args.entropy_coef,
            entropy=t.entropy,
        )
        kl_exact = masked_mean(t.kl_exact, t.mask.to(t.kl_exact.dtype)).item()
        self._step_kl.append(kl_exact)
        for name, value in vars(stats).items():
            self._stats[name if name != "loss" else "ppo_loss"].append(value)
        self._stats["kl_exact"].append(kl_exact)
        self._stats["kl_coef"].append(self.kl_coef)
        return (loss, {"logprobs": t.logprobs}) if return_outputs else loss

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        """Add the mean of every PPO diagnostic since the last log (KL, clip fraction, ...)
        and the behaviour log-prob check so far."""
        if self._stats and "loss" in logs:
            for name, values in self._stats.items():
                if name == "ratio_min":
                    logs[name] = min(values)
                elif name == "ratio_max":
                    logs[name] = max(values)
                else:
                    logs[name] = sum(values) / len(values)
            self._stats.clear()
            logs.update(self.behaviour_gap())
        super().log(logs, *args, **kwargs)
