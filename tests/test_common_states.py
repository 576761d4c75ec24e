"""The evaluation's rollouts (base@T per temperature, trained policies per seed), the tempered
distribution a sampled policy stores, common-state scoring and the shared-prefix KV start."""

from __future__ import annotations

import math

import pytest

from spark_core.evaluation.common_states import (
    score_common_states,
    stratified_subset,
    with_sampled,
)
from spark_core.evaluation.policies import (
    UNTRAINED,
    EvaluatedPolicy,
    evaluated_policies,
    evaluated_policy,
)
from spark_core.metrics import entropy_bits
from spark_core.models.constrained_actions.scoring import action_names, tempered
from spark_core.protocol import Question

QUESTIONS = [
    Question(i, f"Question {i}: what is {i} + {i}?", ("1", "2", "3", "4"), cat, "B")
    for i, cat in enumerate(["math", "math", "math", "physics", "physics", "law"])
]


def test_a_sampled_policy_stores_the_distribution_its_action_is_drawn_from():
    p = (0.7, 0.1, 0.15, 0.05)
    assert entropy_bits(p) == pytest.approx(1.3190, abs=1e-4)
    assert entropy_bits(tempered(p, 1.5)) == pytest.approx(1.6709, abs=1e-4)  # the case
    assert sum(tempered(p, 1.5)) == pytest.approx(1.0)
    # p^(1/T): the ratio of two actions' probabilities is raised to 1/T
    t = tempered(p, 0.5)
    assert t[0] / t[1] == pytest.approx((0.7 / 0.1) ** 2)
    assert tempered(p, 1.0) == list(p) and tempered(p, 0.0) == list(p)  # T=1 and greedy: as is
    assert tempered([0.5, 0.5, 0.0], 2.0) == [0.5, 0.5, 0.0]  # a zero stays zero


def test_base_at_t_expands_per_temperature_and_trained_policies_per_seed(run_config):
    cfg = run_config(
        "evaluation.temperatures=[0.7, 1.3]",
        "training.seeds=[0, 1, 2]",
        'evaluation.extra_adapters={"mine": "/tmp/a"}',
    )
    targets = evaluated_policies(cfg)
    assert [t.name for t in targets] == [
        "base",
        "base@0.7",
        "base@1.3",
        *(f"{p}-seed{s}" for p in ("sft", "ppo") for s in (0, 1, 2)),
        "mine",
    ]
    assert evaluated_policy(cfg, "ppo-seed2") == EvaluatedPolicy("ppo-seed2", "ppo", 2)
    assert evaluated_policy(cfg, "base@1.3").temperature == 1.3
    assert evaluated_policy(cfg, "mine") == EvaluatedPolicy("mine", "mine", UNTRAINED)
    one = run_config("training.seed=4")  # no seeds list: the one seed keeps the plain name
    assert [t.name for t in evaluated_policies(one) if t.trained] == ["sft", "ppo"]
    assert {t.seed for t in evaluated_policies(one) if t.trained} == {4}


def test_old_sampling_temperature_and_bad_temperatures_are_refused(run_config):
    from spark_core.config import ConfigError

    with pytest.raises(ConfigError, match="renamed to 'evaluation.temperatures"):
        run_config("evaluation.sampling_temperature=1.5")
    with pytest.raises(ConfigError, match="temperatures"):
        run_config("evaluation.temperatures=[0, 1]")


def test_each_seed_trains_its_own_adapter_and_seed_0_keeps_its_key(run_config):
    from spark_core.artifacts import ArtifactRef
    from tasks.results import Labels
    from tasks.train import train_unit, training_runs

    ref = ArtifactRef("x", "file:///x", "h", 1)
    labels = Labels(ref, ref)
    cfg = run_config("training.seeds=[0, 1]")
    runs = training_runs(cfg)
    assert [(n, t, c.training.seed) for n, t, c in runs] == [
        ("sft-seed0", "sft", 0),
        ("sft-seed1", "sft", 1),
        ("ppo-seed0", "ppo", 0),
        ("ppo-seed1", "ppo", 1),
    ]
    keys = {n: train_unit(c, t, labels).key for n, t, c in runs}
    assert len(set(keys.values())) == 4
    # seed 0 of a multi-seed run is the adapter a one-seed run trains: not trained twice
    assert keys["ppo-seed0"] == train_unit(run_config(), "ppo", labels).key


def test_stratified_subset_takes_as_many_from_each_category():
    subset = stratified_subset(QUESTIONS, 3, seed=0)
    assert sorted(q.category for q in subset) == ["law", "math", "physics"]
    assert stratified_subset(QUESTIONS, 3, seed=0) == subset  # seeded
    six = stratified_subset(QUESTIONS, 6, seed=0)
    assert six == QUESTIONS  # n >= all: every question, in order
    assert [q.category for q in stratified_subset(QUESTIONS, 4, seed=1)].count("law") == 1
    assert stratified_subset(QUESTIONS, None, seed=0) == QUESTIONS


def test_common_states_score_one_shared_state_per_question(tiny_model_dir):
    from spark_core.config import ACTIONS
    from spark_core.models.hf.backend import HFBackend

    backend = HFBackend(tiny_model_dir, device="cpu", batch_size=4)
    actions = list(ACTIONS)
    target = EvaluatedPolicy("ppo-seed1", "ppo", 1)
    table = score_common_states(backend, target, QUESTIONS, actions).to_pylist()
    assert [r["question_id"] for r in table] == [q.question_id for q in QUESTIONS]
    for row in table:
        assert (row["policy"], row["seed"]) == ("ppo", 1)
        assert row["action_names"] == action_names(actions)
        assert math.isclose(sum(row["probs"]), 1.0, abs_tol=1e-9)
    # batched with a shared system prompt = each state scored alone
    alone = score_common_states(backend, target, QUESTIONS[2:3], actions).to_pylist()
    assert alone[0]["probs"] == pytest.approx(table[2]["probs"], abs=1e-5)
    sampled = with_sampled(table, [EvaluatedPolicy("base@1.6", "base@1.6", UNTRAINED, 1.6)])
    assert all(r["policy"] == "base@1.6" for r in sampled) and len(sampled) == len(table)
    assert entropy_bits(sampled[0]["probs"]) >= entropy_bits(table[0]["probs"])


def test_a_shared_prefix_is_read_once_and_rows_match_a_plain_forward(tiny_model_dir):
    import torch

    from spark_core.models.hf.backend import HFBackend
    from spark_core.models.hf.kv_session import SHARED_PREFIX_MIN, KVSession

    backend = HFBackend(tiny_model_dir, device="cpu", batch_size=4)
    tok = backend.tokenizer
    system = tok(" ".join(["Use the tools well."] * 12), add_special_tokens=False).input_ids
    assert len(system) >= SHARED_PREFIX_MIN
    a = system + tok(" What is two plus two?", add_special_tokens=False).input_ids
    b = system + tok(" Hi", add_special_tokens=False).input_ids
    x, z = (tok(t, add_special_tokens=False).input_ids[0] for t in (" four", "!"))

    def plain(ids):
        with torch.inference_mode():
            return backend.model(input_ids=torch.tensor([ids])).logits[0, -1].float()

    session = KVSession(backend.model, tok.pad_token_id, "cpu")
    session.start([a, b])
    assert session.mask.shape[1] < len(a) + len(b)  # the prefix was not read per row
    assert torch.allclose(session.last[0], plain(a), atol=1e-4)
    assert torch.allclose(session.last[1], plain(b), atol=1e-4)
    session.feed([[x], [z, x]])
    assert torch.allclose(session.last[0], plain([*a, x]), atol=1e-4)
    assert torch.allclose(session.last[1], plain([*b, z, x]), atol=1e-4)
    fork = session.fork([1, 0])
    fork.feed([[z], [z]])
    assert torch.allclose(fork.last[0], plain([*b, z, x, z]), atol=1e-4)
    assert torch.allclose(fork.last[1], plain([*a, x, z]), atol=1e-4)
