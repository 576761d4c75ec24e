"""Train the two adapters: the SFT baseline (TRL's SFTTrainer on the chosen steps) and SPaRK
(offline PPO). Both write a standard PEFT adapter folder (``PeftModel.from_pretrained``) with
the tokenizer and a model card, and resume from their last checkpoint after a kill."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from spark_core.config import RunConfig
from spark_core.progress import publish
from spark_core.rl.data import Truncation, greedy_rows, group_relative, ppo_examples, sft_records
from spark_core.rl.hardware import choose_precision, load_base, lora_config
from spark_core.rl.ppo_trainer import OfflinePPOConfig, OfflinePPOTrainer

log = logging.getLogger(__name__)

METRIC_KEYS = (
    "loss",
    "policy_loss",
    "kl_penalty",  # PPO: the k1/k3 penalty at the logged tokens (not KL(policy || ref))
    "kl_exact",  # PPO: KL(policy || reference) over the vocabulary, completion positions
    "kl_coef",  # PPO: beta (moves with training.kl_target)
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


def sft_rows(
    cfg: RunConfig, rows: list[dict[str, Any]], pool: list[dict[str, Any]] | None
) -> list[dict[str, Any]]:
    """The SFT baseline's data (``training.sft_data``): the selected steps, or the judge's
    top-scored candidate of every step."""
    if cfg.training.sft_data == "greedy":
        if not pool:
            raise ValueError("training.sft_data=greedy needs the candidate pool")
        return greedy_rows(pool)
    return rows


def train_sft(
    cfg: RunConfig,
    rows: list[dict[str, Any]],
    base_path: str,
    out_dir: Path,
    pool: list[dict[str, Any]] | None = None,
):
    """The SFT baseline: imitate the selected actions, or the judge's greedy picks
    (completion-only loss)."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from spark_core.models.hf.backend import load_tokenizer

    tokenizer = load_tokenizer(base_path)
    tokenizer.padding_side = "right"
    model = load_base(base_path, choose_precision(cfg.training))
    data = sft_rows(cfg, rows, pool)
    records, fitted = sft_records(data, tokenizer, cfg.training.max_seq_len)
    args = SFTConfig(
        **common_args(cfg, out_dir, cfg.training.sft_epochs),
        max_length=None,  # rows are already fitted by the rule PPO uses: nothing for TRL to cut
        completion_only_loss=True,
    )
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(records),
        processing_class=tokenizer,
        peft_config=lora_config(cfg.training),
        callbacks=[StepProgress("train sft (steps)")],
    )
    trainer.train(resume_from_checkpoint=last_checkpoint(out_dir))
    card = {
        "title": "SFT baseline",
        "base_model": cfg.generator.name,
        "data": f"{len(records)} steps ({cfg.training.sft_data}) from SPaRK synthesis "
        f"(imitation); {fitted.truncated_rows} lost earlier steps to fit, "
        f"{fitted.dropped_rows} did not fit.",
        "config": cfg.section("training"),
    }
    return finish_adapter(trainer, tokenizer, out_dir, card, fitted)


def pi_old_statement(cfg: RunConfig, gap: dict[str, float], fitted: Truncation) -> str:
    """Which pi_old the PPO ratio used and why, for the log and the model card."""
    t = cfg.training
    if t.old_logprobs == "refresh":
        what = (
            "refresh (standard PPO): the policy at the start of each PPO epoch, scored on "
            "the training rows under the training precision; the trust region moves with "
            "the policy"
        )
    elif cfg.behaviour_source() == "reference":
        what = (
            f"behaviour, pi_beta = the base weights `{cfg.generator.name}` (adapter disabled), "
            "re-scored on every fitted training row under the training precision "
            f"(quantization {t.quantization}): the {cfg.generator.backend} generator wrote "
            "the data with these weights, so the ratio is 1 before the first step"
        )
    else:
        what = (
            f"behaviour, pi_beta = the log-probs the {cfg.generator.backend} generator stored "
            f"at synthesis (`{cfg.generator.name}`, possibly other weights or numerics than "
            f"the trained base); {fitted.unscored_rows} rows truncated to fit were left out, "
            "their log-probs having been scored on the full state"
        )
    if gap:
        what += (
            f". Stored synthesis log-probs vs recomputed: mean |diff| "
            f"{gap['behaviour_gap_mean']:.4f}, max {gap['behaviour_gap_max']:.4f} nats per token"
        )
    return what + "."


def train_ppo(
    cfg: RunConfig,
    rows: list[dict[str, Any]],
    base_path: str,
    out_dir: Path,
    pool: list[dict[str, Any]] | None = None,
    check_start: bool = False,
):
    """SPaRK: offline PPO on the chosen steps' advantages (or every judged candidate with
    group-relative advantages when ``training.candidates == 'all'``). ``check_start``: measure
    the ratio range over all the data before the first step (one more pass; bench/learn.py)."""
    from peft import get_peft_model

    from spark_core.models.hf.backend import load_tokenizer

    t = cfg.training
    tokenizer = load_tokenizer(base_path)
    model = get_peft_model(load_base(base_path, choose_precision(t)), lora_config(t))
    source = group_relative(pool) if t.candidates == "all" and pool else rows
    stored = t.old_logprobs == "behaviour" and cfg.behaviour_source() == "stored"
    examples, fitted = ppo_examples(source, tokenizer, t.max_seq_len, stored_pi_beta=stored)
    resolved = t.model_copy(update={"behaviour_source": cfg.behaviour_source()})
    args = OfflinePPOConfig.from_training(resolved, **common_args(cfg, out_dir, t.ppo_epochs))
    trainer = OfflinePPOTrainer(
        model=model,
        args=args,
        train_dataset=examples,
        processing_class=tokenizer,
        callbacks=[StepProgress("train spark (steps)")],
    )
    resume = last_checkpoint(out_dir)
    run_metrics: dict[str, float] = {}
    if check_start and resume is None:
        low, high = trainer.start_ratio_range()
        run_metrics = {"start_ratio_min": low, "start_ratio_max": high}
        log.info("PPO ratio before the first step: [%.6f, %.6f]", low, high)
    trainer.train(resume_from_checkpoint=resume)
    gap = trainer.behaviour_gap()
    statement = pi_old_statement(cfg, gap, fitted)
    log.info("PPO pi_old: %s", statement)
    what = (
        "every judged candidate, group-relative advantages"
        if source is not rows
        else "chosen steps with composite-reward advantages"
    )
    card = {
        "title": "SPaRK (offline PPO)",
        "base_model": cfg.generator.name,
        "data": f"{len(examples)} examples: {what}; {fitted.truncated_rows} lost earlier steps "
        f"to fit, {fitted.dropped_rows} did not fit, {fitted.unscored_rows} left out "
        "(truncated, stored pi_beta).",
        "pi_old": statement,
        "config": cfg.section("training"),
    }
    return finish_adapter(trainer, tokenizer, out_dir, card, fitted, {**gap, **run_metrics})
