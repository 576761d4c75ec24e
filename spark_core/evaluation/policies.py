"""Which policies an evaluation runs: ``evaluation.policies`` expanded into one rollout each.

``base@T`` becomes one sampled baseline per ``evaluation.temperatures`` (``base@0.7``,
``base@1``, ...), each a policy of its own in the report. A trained policy (``sft``, ``ppo``,
``dpo``: named by its trainer) becomes one rollout per training seed (``training.seeds``): named
``ppo`` when there is one seed, ``ppo-seed0``, ``ppo-seed1``, ... otherwise; its rows keep the
policy name ``ppo`` and carry the seed, so the report pools seeds. Extra adapters and models
follow.
"""

from __future__ import annotations

from dataclasses import dataclass

from spark_core.config import SAMPLED_POLICY, TRAINED_POLICIES, RunConfig

UNTRAINED = -1  # the seed column of a policy without a training seed (base, base@T, extras)
TESTED = "ppo"  # SPaRK's policy: the claims and the entropy tests compare it with every other


@dataclass(frozen=True)
class EvaluatedPolicy:
    """One rollout of the evaluation."""

    name: str  # the rollout's own name: its task run, artifact and cache unit
    policy: str  # what the report groups by ("ppo" for every seed of it)
    seed: int = UNTRAINED  # the adapter's training seed
    temperature: float = 0.0  # 0: greedy

    @property
    def trained(self) -> bool:
        return self.policy in TRAINED_POLICIES


def sampled_name(temperature: float) -> str:
    """``base@0.7``: the base model sampled at that temperature."""
    return f"base@{temperature:g}"


def seeded_name(policy: str, seed: int, seeds: list[int]) -> str:
    """A trained policy's rollout name: the policy alone when there is one seed."""
    return policy if len(seeds) == 1 else f"{policy}-seed{seed}"


def evaluated_policies(cfg: RunConfig) -> list[EvaluatedPolicy]:
    """Every rollout of the evaluation, in the order of ``evaluation.policies`` then the
    extra adapters and models."""
    seeds = cfg.training.seed_list()
    out: list[EvaluatedPolicy] = []
    for policy in cfg.evaluation.policies:
        if policy == SAMPLED_POLICY:
            out += [
                EvaluatedPolicy(sampled_name(t), sampled_name(t), UNTRAINED, t)
                for t in cfg.evaluation.temperatures
            ]
        elif policy in TRAINED_POLICIES:
            out += [EvaluatedPolicy(seeded_name(policy, s, seeds), policy, s) for s in seeds]
        else:
            out.append(EvaluatedPolicy(policy, policy))
    out += [EvaluatedPolicy(name, name) for name in cfg.evaluation.extra_adapters]
    out += [EvaluatedPolicy(name, name) for name in cfg.evaluation.extra_models]
    return out


def evaluated_policy(cfg: RunConfig, name: str) -> EvaluatedPolicy:
    """The rollout of that name; a name the config does not list (a bench's, a test's) is a
    greedy policy of its own."""
    for target in evaluated_policies(cfg):
        if target.name == name:
            return target
    return EvaluatedPolicy(name, name)
