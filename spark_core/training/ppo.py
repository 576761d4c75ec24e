"""SPaRK's adapter: offline PPO (``ppo_trainer.OfflinePPOTrainer``, the loss in ``ppo_loss``)
on the selected steps' advantages, and the statement of which pi_old its ratio used, for the log
and the model card. A PEFT adapter folder that resumes from its last checkpoint after a kill."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from spark_core.config import RunConfig
from spark_core.training.adapter_run import (
    StepProgress,
    common_args,
    finish_adapter,
    last_checkpoint,
)
from spark_core.training.data import Truncation, group_relative, ppo_examples
from spark_core.training.hardware import choose_precision, load_base, lora_config
from spark_core.training.ppo_trainer import OfflinePPOConfig, OfflinePPOTrainer

log = logging.getLogger(__name__)


def pi_old_statement(cfg: RunConfig, gap: dict[str, float], fitted: Truncation) -> str:
    """Which pi_old the PPO ratio used and why, for the log and the model card."""
    t = cfg.training
    if t.ppo.old_logprobs == "refresh":
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
    """SPaRK: offline PPO on the selected steps' advantages (or every judged candidate with
    group-relative advantages when ``training.ppo.candidates == 'all'``). ``check_start``: measure
    the ratio range over all the data before the first step (one more pass; bench/learn.py)."""
    from peft import get_peft_model

    from spark_core.models.hf.backend import load_tokenizer

    t, ppo = cfg.training, cfg.training.ppo
    tokenizer = load_tokenizer(base_path)
    model = get_peft_model(load_base(base_path, choose_precision(t)), lora_config(t.lora))
    source = group_relative(pool) if ppo.candidates == "all" and pool else rows
    stored = ppo.old_logprobs == "behaviour" and cfg.behaviour_source() == "stored"
    examples, fitted = ppo_examples(source, tokenizer, t.max_seq_len, stored_pi_beta=stored)
    resolved = ppo.model_copy(update={"behaviour_source": cfg.behaviour_source()})
    args = OfflinePPOConfig.from_training(resolved, **common_args(cfg, out_dir, ppo.epochs))
    trainer = OfflinePPOTrainer(
        model=model,
        args=args,
        train_dataset=examples,
        processing_class=tokenizer,
        callbacks=[StepProgress("train ppo (steps)")],
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
        else "selected steps with composite-reward advantages"
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
