"""TRL's SFTTrainer with the completion-only loss computed on the completions' window.

On a device without Triton (a CPU), TRL's fused LM head scores every position of the batch,
prompts included, in [tokens x 32,768] tiles, each unrolled into several full-tile
temporaries: in the demo's SFT step (4 rows of ~300 tokens) the step's resident memory grew by
~1.9 GB, most of it those tiles. The loss reads only the completion tokens, and a SPaRK step's
prompt (the state) is most of each row: here the LM head runs over the window that holds every
row's completion (``logits_to_keep``, as the PPO trainer does), and the loss, the entropy and
the token accuracy are TRL's formulas on that window. Elsewhere (a GPU, where TRL's Triton
kernel already scores only the labelled positions, and any loss option this override does
not cover) it is TRL's own ``compute_loss``.
"""

from __future__ import annotations

from typing import Any

import torch
from trl import SFTTrainer

from spark_core.training.ppo_loss import next_token_logp

IGNORED = -100  # the label of a position the loss skips (transformers' convention)


def completion_window(labels: torch.Tensor) -> int:
    """The column of the first position that predicts a labelled token, over all rows: the
    logits from there to the end are all the loss reads (at least the last two columns)."""
    labelled = labels[:, 1:] != IGNORED
    if not labelled.any():
        return labels.shape[1] - 2
    return int(labelled.float().argmax(dim=1)[labelled.any(dim=1)].min())


def window_terms(
    logits: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-token log-prob of each label, the distribution's entropy, whether the label is the
    argmax, and the labelled mask; ``logits`` are the window's, ``labels`` the window's
    labels (one column longer: position k predicts label k + 1)."""
    logp = next_token_logp(logits)  # [rows, window - 1, vocab], fp32
    targets = labels[:, 1:]
    mask = targets != IGNORED
    safe = targets.clamp(min=0)
    token_logp = torch.gather(logp, -1, safe[..., None]).squeeze(-1) * mask
    with torch.no_grad():
        entropy = -(logp.exp() * logp).sum(dim=-1) * mask
        is_top1 = (logp.argmax(dim=-1) == safe) & mask
    return token_logp, entropy, is_top1, mask


class WindowedSFTTrainer(SFTTrainer):
    def _windowed(self, inputs: dict[str, Any]) -> bool:
        """On a CPU, for the plain completion-only NLL loss (what ``train_sft`` configures)."""
        return (
            "labels" in inputs
            and "attention_mask" in inputs
            and inputs["labels"].device.type == "cpu"
            and self.compute_loss_func is None
            and self.label_smoother is None
            and not getattr(self, "aux_loss_enabled", False)
            and getattr(self.args, "loss_type", "nll") == "nll"
            and hasattr(self, "_total_train_tokens")  # TRL's metrics, kept as TRL keeps them
        )

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if return_outputs or not self._windowed(inputs):
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        mode = "train" if self.model.training else "eval"
        labels = inputs["labels"]
        first = completion_window(labels)
        model_inputs = {k: v for k, v in inputs.items() if k not in ("labels", "use_cache")}
        out = model(**model_inputs, use_cache=False, logits_to_keep=labels.shape[1] - first)
        token_logp, entropy, is_top1, mask = window_terms(out.logits, labels[:, first:])
        # TRL's normalisation: summed over the tokens, divided by the batch's (or the whole
        # accumulated step's) labelled tokens
        num_tokens = mask.sum() if num_items_in_batch is None else num_items_in_batch
        loss = -token_logp.sum() / torch.as_tensor(num_tokens).clamp(min=1)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * (self.accelerator.num_processes // self.get_tp_size())
        # the metrics TRL logs (entropy, token accuracy, tokens seen), the same way
        gather = self.accelerator.gather_for_metrics
        valid = gather(mask.sum()).sum()
        metrics = self._metrics[mode]
        metrics["entropy"].append((gather(entropy.sum()).sum() / valid).item() if valid else 0.0)
        metrics["mean_token_accuracy"].append(
            (gather(is_top1.sum()).sum() / valid).item() if valid else 0.0
        )
        if mode == "train":
            seen = gather(inputs["attention_mask"].sum()).sum().item()
            self._total_train_tokens += seen // self._tp_size
        metrics["num_tokens"] = [self._total_train_tokens]
        return loss
