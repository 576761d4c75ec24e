"""Offline PPO moves tool choice: on held-out real states, P(target action) rises after
training on steps where the target carried the positive advantage (bench/learn.py on the tiny
random model)."""

from __future__ import annotations

from spark_core.config import load_config
from spark_core.data.questions import validate
from spark_core.data.sources import read_source
from spark_core.models.hf.backend import HFBackend
from spark_core.training import probe
from spark_core.training.ppo import train_ppo


def test_ppo_raises_the_target_actions_probability_on_held_out_states(tiny_model_dir, tmp_path):
    cfg = load_config(
        "configs/demo.yaml",
        [
            f"generator.name={tiny_model_dir}",
            "training.ppo.epochs=2",
            "training.learning_rate=3e-3",
            "training.batch_size=4",
            "training.save_steps=100000",
        ],
    )
    actions = cfg.rollout.actions
    questions = validate(read_source("bundled")).accepted
    subset = [q for q in questions if q["category"] in ("chemistry", "physics")][:8]
    train, held_out = probe.split(probe.states(subset, actions), train_per_category=2)
    assert len(train) == 4 and len(held_out) == 4
    assert not {s.question_id for s in train} & {s.question_id for s in held_out}
    backend = HFBackend(tiny_model_dir, "cpu", batch_size=4)
    data = probe.with_behaviour(backend, probe.rows(train, actions, "chemistry", negatives=2))
    before = probe.action_probs(backend, held_out, actions, adapter=None)
    history = train_ppo(cfg, data, tiny_model_dir, tmp_path / "ppo")
    backend.add_adapter("ppo", tmp_path / "ppo" / "adapter")
    after = probe.action_probs(backend, held_out, actions, adapter="ppo")
    gain = [a["chemistry"] - b["chemistry"] for a, b in zip(after, before, strict=True)]
    assert min(gain) > 0, gain  # every held-out state moved towards the target
    assert all(probe.kl(a, b) > 0 for a, b in zip(after, before, strict=True))
    assert history[-1]["ratio_max"] > 1.0 and "clipfrac" in history[-1]
