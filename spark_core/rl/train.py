"""Train the two adapters: the SFT baseline (TRL's SFTTrainer on the chosen steps) and SPaRK
(offline PPO). Both write a standard PEFT adapter folder (``PeftModel.from_pretrained``) with
the tokenizer and a model card, and resume from their last checkpoint after a kill."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from spark_core.config import RunConfig
from spark_core.progress import publish
from spark_core.rl.data import Truncation, greedy_rows, group_relative, ppo_examples, sft_records
from spark_core.rl.hardware import choose_precision, load_base, lora_config
from spark_core.rl.ppo_trainer import OfflinePPOConfig, OfflinePPOTrainer

METRIC_KEYS = (
    "loss",
    "policy_loss",
    "kl",
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


def common_args(cfg: RunConfig, out_dir: Path, epochs: int) -> dict[str, Any]:
    t = cfg.training
    precision = choose_precision(t)
    return dict(
        output_dir=str(out_dir / "checkpoints"),
        num_train_epochs=epochs,
        max_steps=t.max_steps,
        per_device_train_batch_size=t.batch_size,
        gradient_accumulation_steps=t.grad_accum,
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
    trainer: Any, tokenizer: Any, out_dir: Path, card: dict[str, Any], fitted: Truncation
) -> list[dict]:
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

    from spark_core.models.hf_backend import load_tokenizer

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


def train_ppo(
    cfg: RunConfig,
    rows: list[dict[str, Any]],
    base_path: str,
    out_dir: Path,
    pool: list[dict[str, Any]] | None = None,
):
    """SPaRK: offline PPO on the chosen steps' advantages (or every judged candidate with
    group-relative advantages when ``training.candidates == 'all'``)."""
    from peft import get_peft_model

    from spark_core.models.hf_backend import load_tokenizer

    t = cfg.training
    tokenizer = load_tokenizer(base_path)
    model = get_peft_model(load_base(base_path, choose_precision(t)), lora_config(t))
    source = group_relative(pool) if t.candidates == "all" and pool else rows
    examples, fitted = ppo_examples(source, tokenizer, t.max_seq_len)
    args = OfflinePPOConfig.from_training(t, **common_args(cfg, out_dir, t.ppo_epochs))
    trainer = OfflinePPOTrainer(
        model=model,
        args=args,
        train_dataset=examples,
        processing_class=tokenizer,
        callbacks=[StepProgress("train spark (steps)")],
    )
    trainer.train(resume_from_checkpoint=last_checkpoint(out_dir))
    what = (
        "every judged candidate, group-relative advantages"
        if source is not rows
        else "chosen steps with composite-reward advantages"
    )
    card = {
        "title": "SPaRK (offline PPO)",
        "base_model": cfg.generator.name,
        "data": f"{len(examples)} examples: {what}; pi_old = {t.old_logprobs} log-probs; "
        f"{fitted.truncated_rows} lost earlier steps to fit, {fitted.dropped_rows} did not fit.",
        "config": cfg.section("training"),
    }
    return finish_adapter(trainer, tokenizer, out_dir, card, fitted)
