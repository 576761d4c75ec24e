"""The SFT baseline: TRL's SFTTrainer on the selected steps (or the judge's greedy picks),
completion-only loss; a PEFT adapter folder that resumes from its last checkpoint after a kill."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from spark_core.config import RunConfig
from spark_core.training.adapter_run import (
    StepProgress,
    common_args,
    finish_adapter,
    last_checkpoint,
)
from spark_core.training.data import greedy_rows, sft_records
from spark_core.training.hardware import choose_precision, load_base, lora_config


def sft_rows(
    cfg: RunConfig, rows: list[dict[str, Any]], pool: list[dict[str, Any]] | None
) -> list[dict[str, Any]]:
    """The SFT baseline's data (``training.sft.data``): the selected steps, or the judge's
    top-scored candidate of every step."""
    if cfg.training.sft.data == "greedy":
        if not pool:
            raise ValueError("training.sft.data=greedy needs the candidate pool")
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
    from trl import SFTConfig

    from spark_core.models.hf.backend import load_tokenizer
    from spark_core.training.sft_window import WindowedSFTTrainer

    tokenizer = load_tokenizer(base_path)
    tokenizer.padding_side = "right"
    model = load_base(base_path, choose_precision(cfg.training))
    data = sft_rows(cfg, rows, pool)
    records, fitted = sft_records(data, tokenizer, cfg.training.max_seq_len)
    args = SFTConfig(
        **common_args(cfg, out_dir, cfg.training.sft.epochs),
        max_length=None,  # rows are already fitted by the rule PPO uses: nothing for TRL to cut
        completion_only_loss=True,
    )
    trainer = WindowedSFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(records),
        processing_class=tokenizer,
        peft_config=lora_config(cfg.training.lora),
        callbacks=[StepProgress("train sft (steps)")],
    )
    trainer.train(resume_from_checkpoint=last_checkpoint(out_dir))
    card = {
        "title": "SFT baseline",
        "base_model": cfg.generator.name,
        "data": f"{len(records)} steps ({cfg.training.sft.data}) from SPaRK synthesis "
        f"(imitation); {fitted.truncated_rows} lost earlier steps to fit, "
        f"{fitted.dropped_rows} did not fit.",
        "config": cfg.section("training"),
    }
    return finish_adapter(trainer, tokenizer, out_dir, card, fitted)
