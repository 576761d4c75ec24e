"""The step-level DPO adapter: TRL's DPOTrainer on the candidate pool's judged pairs
(``dpo_pairs.py``), on the same LoRA/QLoRA base, training arguments, adapter folder and model
card as the SFT and PPO adapters. With a PEFT model and no ``ref_model``, TRL's reference is
the same network with the adapter disabled: no second copy of the weights."""

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
from spark_core.training.dpo_pairs import dpo_records, preference_pairs
from spark_core.training.hardware import choose_precision, load_base, lora_config


def train_dpo(cfg: RunConfig, pool: list[dict[str, Any]], base_path: str, out_dir: Path):
    """Step-level DPO: prefer each step's selected candidate over a worse (or, with
    ``training.dpo.rarity_margin``, a more common) candidate for the same state."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from spark_core.models.hf.backend import load_tokenizer

    t, dpo = cfg.training, cfg.training.dpo
    pairs = preference_pairs(
        pool, cfg.rollout.viable_threshold, dpo.score_margin, dpo.rarity_margin
    )
    if not pairs:
        raise ValueError(
            f"the candidate pool ({len(pool)} candidates) gives no DPO pair: no step's viable "
            f"pick beats its lowest-scored candidate by training.dpo.score_margin="
            f"{dpo.score_margin}; lower it"
        )
    tokenizer = load_tokenizer(base_path)
    tokenizer.padding_side = "right"
    records, fitted = dpo_records(pairs, tokenizer, t.max_seq_len)
    args = DPOConfig(
        **common_args(cfg, out_dir, dpo.epochs),
        max_length=None,  # pairs are already fitted by the rule SFT and PPO use
        beta=dpo.beta,
    )
    trainer = DPOTrainer(
        model=load_base(base_path, choose_precision(t)),
        args=args,
        train_dataset=Dataset.from_list(records),
        processing_class=tokenizer,
        peft_config=lora_config(t.lora),
        callbacks=[StepProgress("train dpo (steps)")],
    )
    trainer.train(resume_from_checkpoint=last_checkpoint(out_dir))
    kinds = {k: sum(p["kind"] == k for p in pairs) for k in ("score", "rarity")}
    card = {
        "title": "Step-level DPO",
        "base_model": cfg.generator.name,
        "data": f"{len(records)} preference pairs from the candidate pool ({kinds['score']} "
        f"selected-over-lowest with score margin >= {dpo.score_margin}, {kinds['rarity']} "
        f"rarer-over-commoner tool); beta = {dpo.beta}; reference = the base model (adapter "
        f"disabled); {fitted.truncated_rows} lost earlier steps to fit, "
        f"{fitted.dropped_rows} did not fit.",
        "config": cfg.section("training"),
    }
    return finish_adapter(trainer, tokenizer, out_dir, card, fitted)
