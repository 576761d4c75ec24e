"""Offline PPO: the loss by hand, its invariants, and the trainer on a tiny random model."""

from __future__ import annotations

import math

import pytest
import torch

from spark_core.config import PPOSettings
from spark_core.training.data import PPOCollator, encode, group_relative, ppo_examples
from spark_core.training.ppo_loss import kl_per_token, ppo_loss, token_logprobs
from spark_core.training.ppo_trainer import OfflinePPOConfig, OfflinePPOTrainer
from tests.helpers import PPO_SYSTEM, make_policy, ppo_args, ppo_rows, random_adapter


def k3_loss(logprobs, old, ref, advantages, mask, clip_eps=0.2, kl_coef=0.0):
    """``ppo_loss`` as these tests use it: the k3 KL estimator, no entropy bonus."""
    return ppo_loss(
        logprobs=logprobs,
        old_logprobs=old,
        ref_logprobs=ref,
        advantages=advantages,
        mask=mask,
        clip_eps=clip_eps,
        kl_coef=kl_coef,
        kl_estimator="k3",
        entropy_coef=0.0,
    )


def test_ppo_loss_matches_a_hand_computation():
    # two sequences, three token positions; the last position of row 2 is padding
    logprobs = torch.tensor([[-1.0, -2.0, -0.5], [-0.2, -1.5, 0.0]])
    old = torch.tensor([[-1.2, -1.0, -0.5], [-0.2, -1.0, 0.0]])
    ref = torch.tensor([[-1.0, -2.5, -1.0], [-0.4, -1.5, 0.0]])
    adv = torch.tensor([1.0, -2.0])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    loss, stats = k3_loss(logprobs, old, ref, adv, mask, kl_coef=0.1)

    def clipped(a, r):
        return max(-a * r, -a * min(max(r, 0.8), 1.2))

    r1 = [math.exp(0.2), math.exp(-1.0), 1.0]
    r2 = [1.0, math.exp(-0.5)]
    pg = (sum(clipped(1.0, r) for r in r1) / 3 + sum(clipped(-2.0, r) for r in r2) / 2) / 2

    def k3(lp, rp):
        return math.exp(rp - lp) - (rp - lp) - 1

    kl = (
        sum(k3(a, b) for a, b in [(-1.0, -1.0), (-2.0, -2.5), (-0.5, -1.0)]) / 3
        + sum(k3(a, b) for a, b in [(-0.2, -0.4), (-1.5, -1.5)]) / 2
    ) / 2
    assert stats.policy_loss == pytest.approx(pg, rel=1e-6)
    assert stats.kl_penalty == pytest.approx(kl, rel=1e-6)
    assert loss.item() == pytest.approx(pg + 0.1 * kl, rel=1e-6)
    assert stats.clipfrac == pytest.approx((2 / 3 + 1 / 2) / 2)  # r = e^-1 and e^-0.5 clip


def test_kl_estimators_are_zero_at_the_reference():
    lp = torch.tensor([[-1.0, -0.3]])
    assert kl_per_token(lp, lp, "k1").abs().sum() == 0
    assert kl_per_token(lp, lp, "k3").abs().sum() == 0
    with pytest.raises(ValueError):
        kl_per_token(lp, lp, "k2")


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from spark_core.models.hf.backend import load_tokenizer

    return load_tokenizer(tiny_model_dir)


def test_ppo_terms_come_from_the_training_config_only(tmp_path):
    ppo = PPOSettings(clip_eps=0.3, kl_coef=0.1, kl_estimator="k1", entropy_coef=0.01)
    args = OfflinePPOConfig.from_training(ppo, output_dir=str(tmp_path), use_cpu=True)
    assert [getattr(args, n) for n in OfflinePPOConfig.PPO_TERMS] == [
        0.3,
        0.1,
        "k1",
        None,
        0.01,
        "behaviour",
        "auto",
        0.1,
    ]
    with pytest.raises(TypeError):  # no defaults of its own that could drift from the config
        OfflinePPOConfig(output_dir=str(tmp_path), use_cpu=True)
    with pytest.raises(TypeError, match="come from training.ppo"):
        OfflinePPOConfig.from_training(ppo, output_dir=str(tmp_path), clip_eps=0.5)


def test_prompt_tokens_are_masked_out_of_the_loss(tiny_model_dir, tokenizer):
    ids, mask = encode(
        tokenizer,
        PPO_SYSTEM,
        "What is 2+2?",
        "Thought: 4.\nAction: cot\nAction Input: 4",
        max_len=512,
    )
    assert 0 < sum(mask) < len(mask) and mask[0] == 0 and mask[-1] == 1
    batch = PPOCollator(tokenizer.pad_token_id)(
        [{"input_ids": ids, "completion_mask": mask, "advantage": 1.0, "index": 0}]
    )
    policy = make_policy(tiny_model_dir)
    logprobs, _ = token_logprobs(policy(input_ids=batch["input_ids"]).logits, batch["input_ids"])
    logprobs.retain_grad()
    token_mask = batch["completion_mask"][:, 1:]
    detached = logprobs.detach()
    loss, _ = k3_loss(logprobs, detached, detached, batch["advantages"], token_mask, kl_coef=0.05)
    loss.backward()
    grad = logprobs.grad[0]
    assert torch.all(grad[token_mask[0] == 0] == 0)
    assert torch.all(grad[token_mask[0] == 1] != 0)


def test_first_step_ratio_is_one_and_kl_zero_for_an_identity_adapter(
    tiny_model_dir, tokenizer, tmp_path
):
    examples = ppo_examples(ppo_rows(), tokenizer, 256)[0]
    trainer = OfflinePPOTrainer(
        model=make_policy(tiny_model_dir),
        args=ppo_args(tmp_path),
        train_dataset=examples,
        processing_class=tokenizer,
    )
    trainer.start_epoch()  # the start of a PPO epoch
    for batch in (examples[:2], examples[2:]):
        trainer.compute_loss(trainer.model, trainer.data_collator(batch))
    assert trainer._stats["ratio"] == [pytest.approx(1.0, abs=1e-6)] * 2
    assert trainer._stats["clipfrac"] == [0.0, 0.0]
    assert trainer._stats["kl_penalty"] == [pytest.approx(0.0, abs=1e-7)] * 2  # LoRA = identity
    assert trainer._stats["kl_exact"] == [pytest.approx(0.0, abs=1e-7)] * 2


def test_loss_falls_and_the_positive_advantage_action_gains(tiny_model_dir, tokenizer, tmp_path):
    good = "Thought: use the tool.\nAction: calculator\nAction Input: 2+2"
    bad = "Thought: guess.\nAction: cot\nAction Input: maybe 5"
    data = [
        {"system": PPO_SYSTEM, "prompt": "What is 2+2?", "completion": good, "advantage": 1.0},
        {"system": PPO_SYSTEM, "prompt": "What is 2+2?", "completion": bad, "advantage": -1.0},
    ]
    examples = ppo_examples(data, tokenizer, 256)[0]
    policy = make_policy(tiny_model_dir)
    collate = PPOCollator(tokenizer.pad_token_id)

    batch = collate(examples)
    mask = batch["completion_mask"][:, 1:] * batch["attention_mask"][:, 1:]

    def logprobs():
        with torch.no_grad():
            out = policy(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            return token_logprobs(out.logits, batch["input_ids"])[0]

    def objective(lp, old):  # the PPO loss of the whole toy batch against the initial policy
        loss, _ = k3_loss(lp, old, old, batch["advantages"], mask, clip_eps=10.0)
        return loss.item()

    initial = logprobs()
    before = (initial * mask).sum(dim=1).tolist()
    trainer = OfflinePPOTrainer(
        model=policy,
        args=ppo_args(tmp_path, num_train_epochs=8, clip_eps=10.0, kl_coef=0.0),
        train_dataset=examples,
        processing_class=tokenizer,
    )
    trainer.train()
    final = logprobs()
    after = (final * mask).sum(dim=1).tolist()
    assert objective(final, initial) < objective(initial, initial) == 0.0
    assert after[0] - after[1] > before[0] - before[1]  # the +A action gained on the -A one
    logged = trainer.state.log_history[0]
    assert {
        "loss",
        "policy_loss",
        "kl_penalty",
        "kl_exact",
        "clipfrac",
        "ratio",
        "entropy",
        "learning_rate",
    } <= set(logged)


def test_resume_from_checkpoint_continues_the_step_count(tiny_model_dir, tokenizer, tmp_path):
    examples = ppo_examples(ppo_rows(8), tokenizer, 256)[0]
    args = ppo_args(tmp_path, max_steps=4, save_strategy="steps", save_steps=2)
    first = OfflinePPOTrainer(
        model=make_policy(tiny_model_dir),
        args=ppo_args(tmp_path, max_steps=2, save_strategy="steps", save_steps=2),
        train_dataset=examples,
        processing_class=tokenizer,
    )
    first.train()
    assert first.state.global_step == 2
    resumed = OfflinePPOTrainer(
        model=make_policy(tiny_model_dir),
        args=args,
        train_dataset=examples,
        processing_class=tokenizer,
    )
    resumed.train(resume_from_checkpoint=str(tmp_path / "out" / "checkpoint-2"))
    assert resumed.state.global_step == 4
    steps = [e["step"] for e in resumed.state.log_history if "ppo_loss" in e]
    assert steps == [1, 2, 3, 4]  # the history of steps 1-2 came back with the checkpoint


def test_group_relative_advantages():
    pool = [{"question_id": 1, "step": 1, "judge_score": s} for s in (2.0, 4.0, 6.0)]
    pool += [{"question_id": 2, "step": 1, "judge_score": 5.0}]
    out = group_relative(pool)
    assert [round(r["advantage"], 4) for r in out] == [-1.2247, 0.0, 1.2247, 0.0]


def test_both_trainers_write_loadable_peft_adapters(tiny_model_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from spark_core.config import load_config
    from spark_core.training.ppo import train_ppo
    from spark_core.training.sft import train_sft

    cfg = load_config(
        "configs/demo.yaml",
        [
            f"generator.name={tiny_model_dir}",
            "training.max_steps=2",
            "training.batch_size=2",
            "training.save_steps=1",
        ],
    )
    from spark_core.models.hf.backend import HFBackend
    from spark_core.training.behaviour import completion_logprobs

    data = [{**r, "system": PPO_SYSTEM} for r in ppo_rows(4)]
    behaviour = completion_logprobs(
        HFBackend(tiny_model_dir, "cpu"),
        [(r["system"], r["prompt"], r["completion"]) for r in data],
    )
    data = [{**r, "behaviour_logprobs": b} for r, b in zip(data, behaviour, strict=True)]
    for name, fn in (("sft", train_sft), ("ppo", train_ppo)):
        history = fn(cfg, data, tiny_model_dir, tmp_path / name)
        adapter = tmp_path / name / "adapter"
        assert (adapter / "adapter_config.json").is_file()
        assert (adapter / "tokenizer_config.json").is_file()
        card = (adapter / "README.md").read_text()
        assert "library_name: peft" in card and "Training config" in card
        if name == "ppo":  # which pi_old, and the stored log-probs' check
            assert "## pi_old" in card and "re-scored on every fitted training row" in card
            assert "Stored synthesis log-probs vs recomputed: mean |diff|" in card
        assert [h["step"] for h in history] == [1, 2] and all("loss" in h for h in history)
        assert all(h["truncated_rows"] == 0 and h["dropped_rows"] == 0 for h in history)
        model = PeftModel.from_pretrained(
            AutoModelForCausalLM.from_pretrained(tiny_model_dir), adapter
        )
        assert model.active_adapter == "default"
    # rerunning after a finished (or killed) run resumes from the last checkpoint
    again = train_ppo(cfg, data, tiny_model_dir, tmp_path / "ppo")
    assert [h["step"] for h in again] == [1, 2]


def test_activation_checkpointing_changes_memory_not_the_adapter(tiny_model_dir, tmp_path):
    """training.activation_checkpointing is left out of the train key because the recomputed
    activations give the same gradients: the adapters must be equal bit for bit."""
    from safetensors.torch import load_file

    from spark_core.config import load_config
    from spark_core.training.ppo import train_ppo
    from spark_core.training.sft import train_sft

    data = [{**r, "system": PPO_SYSTEM} for r in ppo_rows(4)]
    weights = {}
    for on in (True, False):
        cfg = load_config(
            "configs/demo.yaml",
            [
                f"generator.name={tiny_model_dir}",
                "training.max_steps=2",
                "training.batch_size=2",
                "training.lora.dropout=0.1",  # dropout's random masks must be replayed too
                f"training.activation_checkpointing={str(on).lower()}",
            ],
        )
        for name, fn in (("sft", train_sft), ("ppo", train_ppo)):
            out = tmp_path / f"{name}-{on}"
            fn(cfg, data, tiny_model_dir, out)
            weights[name, on] = load_file(out / "adapter" / "adapter_model.safetensors")
    for name in ("sft", "ppo"):
        on, off = weights[name, True], weights[name, False]
        assert on.keys() == off.keys()
        assert any(bool(t.any()) for k, t in on.items() if "lora_B" in k)  # it trained
        assert all(torch.equal(on[k], off[k]) for k in on), name


def test_reference_logprobs_are_the_base_models(tiny_model_dir, tokenizer, tmp_path):
    """With a trained (non-identity) adapter the reference comes from disabling it, and
    refresh's pi_old is the current policy at the epoch start."""
    from transformers import AutoModelForCausalLM

    policy = random_adapter(tiny_model_dir, 3)
    examples = ppo_examples(ppo_rows(5), tokenizer, 256)[0]
    trainer = OfflinePPOTrainer(
        model=policy, args=ppo_args(tmp_path), train_dataset=examples, processing_class=tokenizer
    )
    trainer.start_epoch()
    assert trainer._old_is_ref is False and set(trainer._old) == set(range(5))
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    for example in examples:
        batch = trainer.data_collator([example])
        with torch.no_grad():
            lp, _ = token_logprobs(base(input_ids=batch["input_ids"]).logits, batch["input_ids"])
            terms = trainer.terms(trainer.model, batch)
        expected = lp[0][batch["completion_mask"][0, 1:].bool()]
        ref = terms.ref_logprobs[terms.mask.bool()]
        assert torch.allclose(ref, expected, atol=1e-5)
        assert not torch.allclose(trainer._old[example["index"]], expected, atol=1e-3)
        assert torch.allclose(
            terms.old_logprobs[terms.mask.bool()], terms.logprobs[terms.mask.bool()]
        )
        assert terms.kl_exact[terms.mask.bool()].min() > 0  # the adapter moved the policy
