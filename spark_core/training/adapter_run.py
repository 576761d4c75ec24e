"""What every adapter's training run shares (the SFT baseline, SPaRK's offline PPO, step-level
DPO): the training arguments, the resume checkpoint, the progress callback, the metric keys
a trainer's logged steps are read into, and the adapter folder with its model card (a standard
PEFT folder, ``PeftModel.from_pretrained``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from spark_core.config import RunConfig
from spark_core.progress import publish
from spark_core.training.data import Truncation
from spark_core.training.hardware import choose_precision

METRIC_KEYS = (
    "loss",
    "policy_loss",
    "kl_penalty",  # PPO: the k1/k3 penalty at the logged tokens (not KL(policy || ref))
    "kl_exact",  # PPO: KL(policy || reference) over the vocabulary, completion positions
    "kl_coef",  # PPO: beta (moves with training.ppo.kl_target)
    "approx_kl",
    "clipfrac",
    "ratio",
    "ratio_min",
    "ratio_max",
    "entropy",
    "learning_rate",
    "grad_norm",
    "truncated_rows",
    "dropped_rows",
    "unscored_rows",  # PPO, stored pi_beta: truncated rows left out
    "behaviour_gap_mean",  # PPO: mean |stored - recomputed| behaviour log-prob (nats)
    "behaviour_gap_max",
    "reward_margin",  # DPO: mean beta * (chosen - rejected) log-ratio against the reference
    "reward_accuracy",  # DPO: share of pairs whose chosen reward beats the rejected one
)
# TRL's DPO log names -> the metric keys above
METRIC_ALIASES = {"rewards/margins": "reward_margin", "rewards/accuracies": "reward_accuracy"}


class StepProgress(TrainerCallback):
    """Optimizer steps done, for the CLI's progress bar."""

    def __init__(self, what: str):
        self.what = what

    def on_step_end(self, args, state, control, **kwargs):
        publish(self.what, state.global_step, state.max_steps)


def checkpointing_args(on: bool) -> dict[str, Any]:
    """Activation checkpointing (non-reentrant: PEFT's frozen inputs need no grad), under the
    argument name of the installed transformers (``gradient_checkpointing`` before 5.x)."""
    from transformers import TrainingArguments

    name = (
        "activation_checkpointing"
        if "activation_checkpointing" in TrainingArguments.__dataclass_fields__
        else "gradient_checkpointing"
    )
    return {name: on, f"{name}_kwargs": {"use_reentrant": False} if on else None}


def common_args(cfg: RunConfig, out_dir: Path, epochs: int) -> dict[str, Any]:
    t = cfg.training
    precision = choose_precision(t)
    return dict(
        output_dir=str(out_dir / "checkpoints"),
        num_train_epochs=epochs,
        max_steps=t.max_steps,
        per_device_train_batch_size=t.batch_size,
        gradient_accumulation_steps=t.grad_accum,
        **checkpointing_args(t.activation_checkpointing),
        learning_rate=t.learning_rate,
        logging_steps=t.logging_steps,
        save_steps=t.save_steps,
        save_total_limit=2,
        seed=t.seed,
        data_seed=t.seed,
        bf16=precision.bf16,
        report_to=[],
        disable_tqdm=True,
        use_cpu=precision.device == "cpu",
        dataloader_num_workers=0,
        lr_scheduler_type="constant",
    )


def last_checkpoint(out_dir: Path) -> str | None:
    checkpoints = sorted(
        (out_dir / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.rsplit("-", 1)[1])
    )
    return str(checkpoints[-1]) if checkpoints else None


def finish_adapter(
    trainer: Any,
    tokenizer: Any,
    out_dir: Path,
    card: dict[str, Any],
    fitted: Truncation,
    run_metrics: dict[str, float] | None = None,
) -> list[dict]:
    """Save the adapter and its card; the logged steps, each with the run-level metrics
    (truncation, ``run_metrics``)."""
    adapter = out_dir / "adapter"
    trainer.model.save_pretrained(adapter)
    tokenizer.save_pretrained(adapter)
    logged = [
        {METRIC_ALIASES.get(k, k): v for k, v in entry.items()}
        for entry in trainer.state.log_history
    ]
    history = [
        {
            "step": int(entry.get("step", 0)),
            **{k: float(entry[k]) for k in METRIC_KEYS if k in entry},
            **fitted.as_metrics(),
            **(run_metrics or {}),
        }
        for entry in logged
        if "loss" in entry
    ]
    (adapter / "README.md").write_text(
        model_card({**card, "final": history[-1] if history else {}})
    )
    return history


def model_card(card: dict[str, Any]) -> str:
    return "\n".join(
        [
            "---",
            "library_name: peft",
            f"base_model: {card['base_model']}",
            "tags: [spark, lora]",
            "---",
            f"# {card['title']}",
            "",
            f"LoRA adapter for `{card['base_model']}`, trained by the spark pipeline.",
            "",
            "## Data",
            card["data"],
            "",
            *(
                ["## pi_old (the PPO ratio's denominator)", card["pi_old"], ""]
                if "pi_old" in card
                else []
            ),
            "## Training config",
            "```json",
            json.dumps(card["config"], indent=2),
            "```",
            "",
            "## Final logged metrics",
            "```json",
            json.dumps(card["final"], indent=2),
            "```",
            "",
            "Load with `PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), "
            "adapter_dir)`.",
        ]
    )
