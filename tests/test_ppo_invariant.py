"""PPO's invariant: before the first optimizer step every completion token's ratio
pi_theta / pi_old is 1, whatever the training precision (bf16 against log-probs stored in
fp32, 4-bit QLoRA where CUDA is present) and however the row was truncated (a multi-step row
that lost two steps). Also: the adaptive KL coefficient and the config refusals."""

from __future__ import annotations

import pytest
import torch

from spark_core.config import ConfigError, load_config
from spark_core.training.data import chat_ids, drop_oldest_steps, fit, ppo_examples
from spark_core.training.ppo_loss import adaptive_kl_coef, exact_kl
from spark_core.training.ppo_trainer import OfflinePPOTrainer
from tests.helpers import long_row, make_policy, ppo_args, ppo_rows

TOLERANCE = 1e-4  # |ratio - 1| before the first step


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from spark_core.models.hf.backend import load_tokenizer

    return load_tokenizer(tiny_model_dir)


def budget_that_drops_two_steps(tokenizer, row) -> int:
    """The token budget at which ``fit`` keeps the row only without its two oldest steps."""
    prompt_ids, completion_ids = chat_ids(
        tokenizer, row["system"], drop_oldest_steps(row["prompt"], 2), row["completion"]
    )
    return len(prompt_ids) + len(completion_ids)


def stored_fp32(tiny_model_dir, data, device="cpu"):
    """The behaviour log-probs synthesis stores: the generator's pass on the full state."""
    from spark_core.models.hf.backend import HFBackend
    from spark_core.training.behaviour import completion_logprobs

    lps = completion_logprobs(
        HFBackend(tiny_model_dir, device),
        [(r["system"], r["prompt"], r["completion"]) for r in data],
    )
    return [{**r, "behaviour_logprobs": lp} for r, lp in zip(data, lps, strict=True)]


def multi_step_data(tiny_model_dir, tokenizer):
    """A 5-step row that must lose two steps, a 1-step and a 0-step row that fit as they are;
    with fp32 log-probs stored on the full states."""
    data = [long_row(5), long_row(1), long_row(0)]
    data[1]["advantage"] = -1.0
    budget = budget_that_drops_two_steps(tokenizer, data[0])
    fitted = fit(tokenizer, data[0]["system"], data[0]["prompt"], data[0]["completion"], budget)
    assert fitted.fits and fitted.dropped_steps == 2
    return stored_fp32(tiny_model_dir, data), budget


def bf16_policy(tiny_model_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16)
    config = LoraConfig(
        r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM"
    )
    return get_peft_model(base, config)


def first_step_ratios(trainer) -> tuple[float, float]:
    """The ratio range the first optimizer step trained on (one micro-batch: all the data)."""
    trainer.train()
    first = next(e for e in trainer.state.log_history if "ratio_min" in e)
    return first["ratio_min"], first["ratio_max"]


def test_ratio_is_one_in_bf16_against_fp32_stored_log_probs_on_a_truncated_row(
    tiny_model_dir, tokenizer, tmp_path
):
    data, budget = multi_step_data(tiny_model_dir, tokenizer)
    examples, report = ppo_examples(data, tokenizer, budget)
    assert [e["truncated"] for e in examples] == [True, False, False]
    assert report.truncated_rows == 1
    trainer = OfflinePPOTrainer(
        model=bf16_policy(tiny_model_dir),
        args=ppo_args(
            tmp_path,
            old_logprobs="behaviour",
            behaviour_source="reference",
            bf16=True,
            per_device_train_batch_size=len(examples),
            max_steps=1,
        ),
        train_dataset=examples,
        processing_class=tokenizer,
    )
    low, high = trainer.start_ratio_range()  # every completion token, no step taken
    assert abs(low - 1) < TOLERANCE and abs(high - 1) < TOLERANCE, (low, high)
    low, high = first_step_ratios(trainer)  # the training path itself: bf16, shuffled batch
    assert abs(low - 1) < TOLERANCE and abs(high - 1) < TOLERANCE, (low, high)
    # the stored fp32 log-probs are kept as a check only: here they are off by bf16's rounding,
    # so taking them as pi_old (as before) would have started the ratios away from 1
    gap = trainer.behaviour_gap()
    assert gap["behaviour_gap_max"] > 1e-3
    assert set(trainer._gap) == {1, 2}  # the truncated row's were scored on another state


def test_ratio_is_one_on_a_row_that_lost_two_steps(tiny_model_dir, tokenizer, tmp_path):
    """fp32, so the only difference left is the row: stored log-probs of the full state are
    not the truncated row's, the reference pass is."""
    data, budget = multi_step_data(tiny_model_dir, tokenizer)
    examples, _ = ppo_examples(data[:1], tokenizer, budget)
    trainer = OfflinePPOTrainer(
        model=make_policy(tiny_model_dir),
        args=ppo_args(tmp_path, old_logprobs="behaviour", behaviour_source="reference"),
        train_dataset=examples,
        processing_class=tokenizer,
    )
    low, high = trainer.start_ratio_range()
    assert abs(low - 1) < TOLERANCE and abs(high - 1) < TOLERANCE, (low, high)
    with torch.no_grad():
        terms = trainer.terms(trainer.model, trainer.data_collator(examples))
    recomputed = terms.ref_logprobs[terms.mask.bool()]
    stored = torch.tensor(data[0]["behaviour_logprobs"])
    ratio_against_stored = torch.exp(recomputed - stored)  # what pi_old = stored would give
    assert (ratio_against_stored - 1).abs().max() > 1e-3
    # with stored log-probs as the only pi_beta, the truncated row is left out, not misused
    kept, report = ppo_examples(data, tokenizer, budget, stored_pi_beta=True)
    assert (len(kept), report.unscored_rows, report.truncated_rows) == (2, 1, 1)
    with pytest.raises(ValueError, match="stored_pi_beta=True"):
        OfflinePPOTrainer(
            model=make_policy(tiny_model_dir),
            args=ppo_args(tmp_path, old_logprobs="behaviour", behaviour_source="stored"),
            train_dataset=examples,
            processing_class=tokenizer,
        )


def _qlora_ready() -> str:
    if not torch.cuda.is_available():
        return "QLoRA needs a CUDA GPU (none here)"
    from spark_core.training.hardware import bitsandbytes_available

    return "" if bitsandbytes_available() else "QLoRA needs bitsandbytes (pip install '.[gpu]')"


@pytest.mark.skipif(bool(_qlora_ready()), reason=_qlora_ready() or "ready")
def test_ratio_is_one_under_qlora_against_bf16_stored_log_probs(
    tiny_model_dir, tokenizer, tmp_path
):
    from peft import get_peft_model

    from spark_core.config import LoraSettings
    from spark_core.training.hardware import Precision, load_base, lora_config

    data, budget = multi_step_data(tiny_model_dir, tokenizer)
    data = stored_fp32(tiny_model_dir, data, device="cuda")  # the bf16 generator's, on CUDA
    examples, _ = ppo_examples(data, tokenizer, budget)
    base = load_base(tiny_model_dir, Precision("cuda", "4bit", True))
    model = get_peft_model(base, lora_config(LoraSettings(r=4)))
    trainer = OfflinePPOTrainer(
        model=model,
        args=ppo_args(
            tmp_path,
            old_logprobs="behaviour",
            behaviour_source="reference",
            bf16=True,
            use_cpu=False,
            per_device_train_batch_size=len(examples),
            max_steps=1,
        ),
        train_dataset=examples,
        processing_class=tokenizer,
    )
    low, high = trainer.start_ratio_range()
    assert abs(low - 1) < TOLERANCE and abs(high - 1) < TOLERANCE, (low, high)
    low, high = first_step_ratios(trainer)
    assert abs(low - 1) < TOLERANCE and abs(high - 1) < TOLERANCE, (low, high)
    assert trainer.behaviour_gap()["behaviour_gap_max"] > 1e-3  # 4-bit is not bf16


def test_exact_kl_by_hand():
    p = torch.tensor([[[0.5, 0.25, 0.25]]])
    q = torch.tensor([[[0.25, 0.25, 0.5]]])
    kl = exact_kl(p.log(), q.log())
    expected = 0.5 * torch.log(torch.tensor(2.0)) + 0.25 * torch.log(torch.tensor(0.5))
    assert kl.shape == (1, 1) and kl.item() == pytest.approx(expected.item(), rel=1e-6)
    assert exact_kl(p.log(), p.log()).item() == 0.0


def test_adaptive_kl_coefficient_follows_the_target(tiny_model_dir, tokenizer, tmp_path):
    assert adaptive_kl_coef(0.1, kl=0.01, kl_target=0.03) == 0.05  # below target / 1.5
    assert adaptive_kl_coef(0.1, kl=0.05, kl_target=0.03) == 0.2  # above 1.5 * target
    assert adaptive_kl_coef(0.1, kl=0.03, kl_target=0.03) == 0.1
    # in the trainer, after every optimizer step: the first step's KL is exactly 0 (identity
    # adapter: halve), every later one is above a tiny target (double)
    examples = ppo_examples(ppo_rows(4), tokenizer, 256)[0]
    trainer = OfflinePPOTrainer(
        model=make_policy(tiny_model_dir),
        args=ppo_args(
            tmp_path,
            kl_coef=0.05,
            kl_target=1e-9,
            per_device_train_batch_size=2,
            num_train_epochs=2,
            max_steps=3,
        ),
        train_dataset=examples,
        processing_class=tokenizer,
    )
    trainer.train()
    logged = [e for e in trainer.state.log_history if "kl_coef" in e]
    assert [e["kl_coef"] for e in logged] == pytest.approx([0.05, 0.025, 0.05])
    assert logged[0]["kl_exact"] == pytest.approx(0.0, abs=1e-9) and logged[1]["kl_exact"] > 0


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["training.ppo.kl_target=0.1", "training.ppo.kl_coef=0"], "training.ppo.kl_target needs"),
        (
            ["generator.backend=openai", "training.ppo.candidates=all"],
            "set training.ppo.behaviour_source=reference",
        ),
        (
            ["training.ppo.behaviour_source=stored", "training.quantization=4bit"],
            "training.quantization=4bit",
        ),
    ],
)
def test_config_refuses_what_cannot_train(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config("configs/demo.yaml", overrides)


def test_behaviour_source_follows_the_generator():
    assert load_config("configs/paper.yaml").behaviour_source() == "reference"
    assert load_config("configs/demo.yaml", ["generator.backend=openai"]).behaviour_source() == (
        "stored"
    )
    assert (
        load_config(
            "configs/demo.yaml",
            ["generator.backend=openai", "training.ppo.behaviour_source=reference"],
        ).behaviour_source()
        == "reference"
    )
    # refresh needs no pi_beta at all: pooled candidates from an openai generator train
    load_config(
        "configs/demo.yaml",
        [
            "generator.backend=openai",
            "training.ppo.candidates=all",
            "training.ppo.old_logprobs=refresh",
        ],
    )
