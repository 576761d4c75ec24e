"""Step-level DPO: pairs from a hand-made candidate pool, the trainer on the tiny model, and
the trainers / policies config check."""

from __future__ import annotations

import pytest

from spark_core.protocol import render_step, state_message
from spark_core.training.data import fit
from spark_core.training.dpo_pairs import dpo_records, preference_pairs
from tests.helpers import OPTIONS, QUESTION, long_row, training_system

SYSTEM = training_system()  # the real system prompt (calculator, chemistry, cot)

# (question, step, action, judge score or None = failed judgement, selected?)
POOL = [
    (1, 0, "A", 6.0, True),
    (1, 0, "B", 5.5, False),
    (1, 0, "C", 2.0, False),  # q1 s0: A over C by 4.0
    (1, 1, "A", 5.0, True),
    (1, 1, "B", 4.5, False),  # only 0.5 below the selected one
    (1, 1, "Z", None, False),  # failed judgement: neither score 0 nor rejected
    (2, 0, "D", 3.0, True),  # fallback selection (nothing viable at 4.0): no pair
    (2, 0, "E", 1.0, False),
    (3, 0, "B", 7.0, True),
    (3, 0, "C", 3.0, False),
    (3, 0, "A", 3.0, False),  # tie with C at the bottom: the name decides (A)
    (4, 0, "R", 5.0, True),
    (4, 0, "A", 5.8, False),  # viable, selected twice (R once), 0.8 above: rarity pair
    (4, 0, "B", 6.5, False),  # selected once, like R: not more common
    (4, 0, "C", 4.5, False),  # never selected: less common than R
    (5, 0, "S", 5.0, True),
    (5, 0, "A", 6.2, False),  # more common but 1.2 above: beyond the rarity margin
    (5, 0, "C", 1.0, False),
    (6, 0, "T", 8.0, True),
    (6, 0, "A", 6.0, False),  # score pair and rarity pair agree: emitted once
]


def pool() -> list[dict]:
    return [
        {
            "question_id": q,
            "step": s,
            "system": SYSTEM,
            "prompt": f"state {q}.{s}",
            "completion": f"{a} at {q}.{s}",
            "action": a,
            "judge_score": score,
            "selected": selected,
        }
        for q, s, a, score, selected in POOL
    ]


def summary(pairs: list[dict]) -> list[tuple]:
    return [
        (p["question_id"], p["step"], p["chosen_action"], p["rejected_action"], p["kind"])
        for p in pairs
    ]


def test_pairs_of_a_hand_made_pool():
    assert summary(preference_pairs(pool(), 4.0, 1.0)) == [
        (1, 0, "A", "C", "score"),
        (3, 0, "B", "A", "score"),
        (5, 0, "S", "C", "score"),
        (6, 0, "T", "A", "score"),
    ]
    assert summary(preference_pairs(pool(), 4.0, 1.0, rarity_margin=1.0)) == [
        (1, 0, "A", "C", "score"),
        (3, 0, "B", "A", "score"),
        (4, 0, "R", "A", "rarity"),
        (5, 0, "S", "C", "score"),
        (6, 0, "T", "A", "score"),
    ]
    # a smaller score margin admits the close steps; the failed judgement stays out
    assert summary(preference_pairs(pool(), 4.0, 0.5)) == [
        (1, 0, "A", "C", "score"),
        (1, 1, "A", "B", "score"),
        (3, 0, "B", "A", "score"),
        (4, 0, "R", "C", "score"),
        (5, 0, "S", "C", "score"),
        (6, 0, "T", "A", "score"),
    ]
    first = preference_pairs(pool(), 4.0, 1.0)[0]
    assert (first["prompt"], first["chosen"], first["rejected"]) == (
        "state 1.0",
        "A at 1.0",
        "C at 1.0",
    )
    assert (first["chosen_score"], first["rejected_score"]) == (6.0, 2.0)
    # the order of the pool's rows does not matter
    assert preference_pairs(pool()[::-1], 4.0, 1.0, 1.0) == preference_pairs(pool(), 4.0, 1.0, 1.0)


def test_pairs_are_fitted_by_the_sft_ppo_rule(tokenizer):
    row = long_row(5)
    short = render_step("Guess.", "cot", "B")
    pair = {**row, "chosen": row["completion"], "rejected": short}
    whole = fit(tokenizer, SYSTEM, row["prompt"], row["completion"], 10**6)
    budget = len(whole.prompt_ids) + len(whole.completion_ids) - 40
    (record,), report = dpo_records([pair], tokenizer, budget)
    # the longer completion decides how many steps go, exactly as fit() drops them
    expected = fit(tokenizer, SYSTEM, row["prompt"], row["completion"], budget)
    assert expected.fits and expected.dropped_steps > 0
    assert record["prompt"][1]["content"] == expected.prompt
    assert record["prompt"][0]["content"] == SYSTEM
    assert record["chosen"][0]["content"] == row["completion"]
    assert record["rejected"][0]["content"] == short
    assert (report.rows, report.truncated_rows, report.dropped_rows) == (1, 1, 0)
    untouched = {**pair, "prompt": state_message(QUESTION, OPTIONS, "")}
    (record,), report = dpo_records([untouched], tokenizer, budget)
    assert record["prompt"][1]["content"] == untouched["prompt"] and report.truncated_rows == 0


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from spark_core.models.hf.backend import load_tokenizer

    return load_tokenizer(tiny_model_dir)


def test_dpo_trainer_writes_a_loadable_peft_adapter(tiny_model_dir, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from spark_core.config import load_config
    from spark_core.training.dpo import train_dpo

    cfg = load_config(
        "configs/demo.yaml",
        [
            f"generator.name={tiny_model_dir}",
            "training.trainers=[dpo]",
            "evaluation.policies=[base, dpo]",
            "training.max_steps=2",
            "training.batch_size=2",
            "training.learning_rate=0.01",
            "training.dpo.rarity_margin=1.0",
        ],
    )
    rows = [
        {
            **r,
            "prompt": state_message(QUESTION, OPTIONS, ""),
            "completion": render_step(f"Think about {r['action']}.", "cot", r["completion"]),
        }
        for r in pool()
    ]
    history = train_dpo(cfg, rows, tiny_model_dir, tmp_path / "dpo")
    adapter = tmp_path / "dpo" / "adapter"
    assert (adapter / "adapter_config.json").is_file()
    assert (adapter / "tokenizer_config.json").is_file()
    card = (adapter / "README.md").read_text()
    assert "library_name: peft" in card and "# Step-level DPO" in card
    assert "5 preference pairs" in card and "4 selected-over-lowest" in card
    assert [h["step"] for h in history] == [1, 2]
    assert all({"loss", "reward_margin", "reward_accuracy"} <= set(h) for h in history)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    with torch.no_grad():
        before = base(input_ids=ids).logits
        model = PeftModel.from_pretrained(base, adapter)
        after = model(input_ids=ids).logits
    assert after.shape == before.shape
    assert not torch.allclose(after, before)  # the adapter learned something (B != 0)


def test_trained_policies_need_their_trainer(run_config):
    from spark_core.config import TRAINED_POLICIES, ConfigError, load_config

    assert run_config().training.trainers == ["sft", "ppo"]
    assert TRAINED_POLICIES == ("sft", "ppo", "dpo")  # each evaluated as its trainer's name
    cfg = run_config("training.trainers=[sft, ppo, dpo]", "evaluation.policies=[base, dpo]")
    assert cfg.evaluation.policies == ["base", "dpo"]
    with pytest.raises(ConfigError, match="'dpo' trainer writes.*add 'dpo'"):
        run_config("evaluation.policies=[base, sft, dpo]")
    with pytest.raises(ConfigError, match="'ppo'.*'ppo' trainer"):
        run_config("training.trainers=[sft]")
    # the policy once called spark (the project's and the CLI's name) is refused by its new name
    with pytest.raises(ConfigError, match="policies: 'spark' was renamed to 'ppo'"):
        run_config("evaluation.policies=[base, sft, spark]")
    with pytest.raises(ConfigError, match="training.trainers"):
        run_config("training.trainers=[grpo]")
    paper = load_config("configs/paper.yaml")
    assert paper.training.trainers == ["sft", "ppo", "dpo"]
    assert {"sft", "ppo", "dpo"} <= set(paper.evaluation.policies)


def test_adding_dpo_keeps_the_sft_and_ppo_train_keys(run_config):
    from spark_core.artifacts import ArtifactRef
    from tasks.results import Labels
    from tasks.train import train_unit

    labels = Labels(
        *(ArtifactRef(name, name, name * 4, 1) for name in ("candidate_pool", "trajectories"))
    )

    def key(cfg, trainer):
        return train_unit(cfg, trainer, labels).key

    before = run_config()
    after = run_config("training.trainers=[sft, ppo, dpo]", "training.dpo.beta=0.3")
    for trainer in ("sft", "ppo"):
        assert key(before, trainer) == key(after, trainer)
    assert train_unit(after, "ppo", labels).what == "ppo"  # folders named by the trainer
    only_dpo = ("training.trainers=[dpo]", "evaluation.policies=[base]")
    assert key(after, "dpo") == key(run_config(*only_dpo, "training.dpo.beta=0.3"), "dpo")
    assert key(after, "dpo") != key(run_config(*only_dpo), "dpo")  # beta 0.1


def test_a_trainers_key_holds_its_own_group_and_the_shared_settings(run_config):
    """Each trainer reads ``training.<trainer>``: another trainer's group, or a setting that
    does not change the arithmetic (activation checkpointing), keeps its key; the shared
    settings and the LoRA adapter change every trainer's."""
    from spark_core.artifacts import ArtifactRef
    from spark_core.config import TrainingConfig
    from spark_core.training.registry import TRAINERS
    from tasks.results import Labels
    from tasks.train import train_unit

    assert set(TRAINERS) <= set(TrainingConfig.model_fields)  # every trainer has its group
    labels = Labels(
        *(ArtifactRef(name, name, name * 4, 1) for name in ("candidate_pool", "trajectories"))
    )
    every = ("training.trainers=[sft, ppo, dpo]",)

    def keys(*overrides):
        cfg = run_config(*every, *overrides)
        return {t: train_unit(cfg, t, labels).key for t in TRAINERS}

    base = keys()
    for group in ("sft", "ppo", "dpo"):
        changed = keys(f"training.{group}.epochs=7")
        assert {t for t in TRAINERS if changed[t] != base[t]} == {group}
    assert keys("training.activation_checkpointing=false") == base
    for shared in ("training.lora.r=4", "training.learning_rate=0.001"):
        changed = keys(shared)
        assert all(changed[t] != base[t] for t in TRAINERS), shared
