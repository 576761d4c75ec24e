"""The SFT baseline's windowed loss (``sft_window.py``) against TRL's own ``compute_loss``, on
the tiny model: the same loss, gradient and logged metrics from the completions' window."""

from __future__ import annotations

import pytest
import torch

from spark_core.training.sft_window import IGNORED, completion_window
from tests.helpers import PPO_SYSTEM, ppo_rows


def _trainer(tiny_model_dir, tmp_path, rows):
    from datasets import Dataset
    from trl import SFTConfig

    from spark_core.config import LoraSettings
    from spark_core.models.hf.backend import load_tokenizer
    from spark_core.training.data import sft_records
    from spark_core.training.hardware import lora_config
    from spark_core.training.sft_window import WindowedSFTTrainer

    tokenizer = load_tokenizer(tiny_model_dir)
    tokenizer.padding_side = "right"
    records, _ = sft_records(rows, tokenizer, 512)
    args = SFTConfig(
        output_dir=str(tmp_path),
        per_device_train_batch_size=len(records),
        report_to=[],
        use_cpu=True,
        completion_only_loss=True,
        max_length=None,
        seed=0,
    )
    return WindowedSFTTrainer(
        model=tiny_model_dir,
        args=args,
        train_dataset=Dataset.from_list(records),
        processing_class=tokenizer,
        peft_config=lora_config(LoraSettings(dropout=0.0)),
    )


def test_completion_window_starts_at_the_earliest_completion():
    labels = torch.full((2, 10), IGNORED)
    labels[0, 6:] = 1  # predicted from column 5 on
    labels[1, 4:8] = 1  # predicted from column 3 on (then padding)
    assert completion_window(labels) == 3


def test_windowed_loss_and_metrics_are_trls(tiny_model_dir, tmp_path):
    from trl import SFTTrainer

    # prompts of different lengths: the rows' completions start at different columns
    rows = [{**r, "system": PPO_SYSTEM} for r in ppo_rows(3)]
    rows[1]["prompt"] += " Show every step of the working, one line each." * 3
    trainer = _trainer(tiny_model_dir, tmp_path, rows)
    model = trainer.model
    model.train()
    for name, p in model.named_parameters():  # a non-identity adapter: gradients everywhere
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.05, generator=torch.Generator().manual_seed(0))
    batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    assert completion_window(batch["labels"]) > 5  # the window leaves prompt columns out

    def loss_grads_metrics(compute):
        model.zero_grad()
        trainer._metrics["train"].clear()
        trainer._total_train_tokens = 0
        loss = compute(trainer, model, dict(batch))
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        return loss.detach(), grads, {k: v[-1] for k, v in trainer._metrics["train"].items()}

    ours = loss_grads_metrics(type(trainer).compute_loss)
    trls = loss_grads_metrics(SFTTrainer.compute_loss)
    assert ours[0] == pytest.approx(float(trls[0]), rel=1e-5)
    # and the textbook definition: cross-entropy of every labelled next token, over all of them
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        by_hand = torch.nn.functional.cross_entropy(
            logits[:, :-1].flatten(0, 1).float(),
            batch["labels"][:, 1:].flatten(),
            ignore_index=IGNORED,
        )
    assert ours[0] == pytest.approx(float(by_hand), rel=1e-5)
    assert ours[1].keys() == trls[1].keys() and len(ours[1]) > 0
    for name in ours[1]:
        torch.testing.assert_close(ours[1][name], trls[1][name], rtol=1e-4, atol=1e-6)
    assert ours[2].keys() == trls[2].keys() == {"entropy", "mean_token_accuracy", "num_tokens"}
    for key in ours[2]:
        assert ours[2][key] == pytest.approx(trls[2][key], rel=1e-5), key
    # positive control: a window one column short drops a labelled token and changes the loss
    short = dict(batch)
    short["labels"] = batch["labels"].clone()
    first = completion_window(short["labels"])
    short["labels"][:, first + 1] = IGNORED
    model.zero_grad()
    assert type(trainer).compute_loss(trainer, model, short).item() != pytest.approx(
        float(trls[0]), rel=1e-5
    )
