"""The model registry: a model asked for twice is loaded once; evaluation policies attach,
switch and merge adapters on the run's generator."""

from __future__ import annotations

import torch

from spark_core.config import load_config
from spark_core.models.registry import REGISTRY
from spark_core.models.requests import ChatRequest
from tests.helpers import random_adapter


def _cfg(tiny_model_dir, tmp_path, *overrides):
    return load_config(
        "configs/demo.yaml",
        [
            f"runtime.runs_dir={tmp_path}",
            f"generator.name={tiny_model_dir}",
            f"judge.name={tiny_model_dir}",
            "generator.device=cpu",
            "judge.device=cpu",
            *overrides,
        ],
    )


def test_the_same_model_asked_twice_is_loaded_once(tiny_model_dir, tmp_path):
    cfg = _cfg(tiny_model_dir, tmp_path)
    generator, judge = REGISTRY.stage_models(cfg)
    assert REGISTRY.stage_models(cfg) == (generator, judge)
    weights = REGISTRY.weights(tiny_model_dir, "cpu", torch.float32)
    assert REGISTRY.weights(tiny_model_dir, "cpu", torch.float32) is weights
    # generator, judge and the base policy all run on those one set of weights
    assert generator.backend.model is weights and judge.scorer.backend.model is weights
    assert REGISTRY.policy(cfg, "base").backend.model is weights
    assert REGISTRY.response_cache(cfg) is generator.cache


def test_policies_attach_switch_and_merge_adapters(tiny_model_dir, tmp_path):
    for name, seed in (("sft", 1), ("ppo", 2), ("other", 3)):
        random_adapter(tiny_model_dir, seed).save_pretrained(tmp_path / name)
    cfg = _cfg(tiny_model_dir, tmp_path / "runs", "evaluation.merge_adapters=false")
    request = [ChatRequest.user("Say something.", max_new_tokens=8)]

    def text(generator):
        return generator.backend.generate(request)[0].text

    base = REGISTRY.policy(cfg, "base")
    sft = REGISTRY.policy(cfg, "sft", adapter=str(tmp_path / "sft"))
    assert sft.backend is base.backend and sft.backend.adapter == "sft"
    with_sft, sft_id = text(sft), sft.backend.model_id
    # one backend: asking for a policy switches its active adapter (one policy at a time)
    ppo = REGISTRY.policy(cfg, "ppo", adapter=str(tmp_path / "ppo"))
    assert ppo.backend.adapter == "ppo" and ppo.backend.model_id != sft_id
    with_ppo = text(ppo)
    plain = text(REGISTRY.policy(cfg, "base"))
    assert base.backend.adapter is None and len({plain, with_sft, with_ppo}) == 3
    assert text(REGISTRY.policy(cfg, "sft", adapter=str(tmp_path / "sft"))) == with_sft

    # another adapter under a name already attached is loaded, not served as the old one
    other = REGISTRY.policy(cfg, "sft", adapter=str(tmp_path / "other"))
    assert text(other) not in (with_sft, plain)

    merging = _cfg(tiny_model_dir, tmp_path / "runs", "evaluation.merge_adapters=true")
    merged = REGISTRY.policy(merging, "sft", adapter=str(tmp_path / "sft"))
    assert merged.backend is not base.backend
    assert REGISTRY.policy(merging, "sft", adapter=str(tmp_path / "sft")).backend is merged.backend
    assert text(merged) == with_sft and merged.backend.model_id == sft_id
    REGISTRY.release_policies()


def test_evaluation_memory_is_bounded_one_merged_copy_at_a_time(tiny_model_dir, tmp_path):
    import gc
    import weakref

    for i in range(4):
        random_adapter(tiny_model_dir, 10 + i).save_pretrained(tmp_path / f"p{i}")
    cfg = _cfg(tiny_model_dir, tmp_path / "runs", "evaluation.merge_adapters=true")
    request = [ChatRequest.user("Say something.", max_new_tokens=6)]
    alive = []
    for i in range(4):
        policy = REGISTRY.policy(cfg, f"p{i}", adapter=str(tmp_path / f"p{i}"))
        policy.backend.generate(request)
        alive.append(weakref.ref(policy.backend.model))
        del policy
        gc.collect()
        # asking for the next policy freed the previous merged copy: one is alive at most
        assert sum(ref() is not None for ref in alive) == 1
    REGISTRY.release_policies()
    gc.collect()
    assert all(ref() is None for ref in alive)


def test_without_merging_adapters_attach_to_the_one_base_and_detach_after(tiny_model_dir, tmp_path):
    from peft.tuners.tuners_utils import BaseTunerLayer

    random_adapter(tiny_model_dir, 21).save_pretrained(tmp_path / "sft")
    cfg = _cfg(tiny_model_dir, tmp_path / "runs", "evaluation.merge_adapters=false")
    REGISTRY.release_policies()
    weights = REGISTRY.weights(tiny_model_dir, "cpu", torch.float32)
    generator, _ = REGISTRY.stage_models(cfg)
    request = [ChatRequest.user("Say something.", max_new_tokens=8)]
    plain = generator.backend.generate(request)[0].text

    sft = REGISTRY.policy(cfg, "sft", adapter=str(tmp_path / "sft"))
    assert sft.backend.model.get_base_model() is weights  # no copy of the weights
    with_sft = sft.backend.generate(request)[0].text
    assert with_sft != plain
    # another backend on the same weights still runs the plain base while it is attached
    assert generator.backend.generate(request)[0].text == plain

    REGISTRY.release_policies()
    assert not any(isinstance(m, BaseTunerLayer) for m in weights.modules())
    assert sft.backend.model is weights and sft.backend.adapter is None
    assert generator.backend.generate(request)[0].text == plain
    again = REGISTRY.policy(cfg, "sft", adapter=str(tmp_path / "sft"))
    assert again.backend.generate(request)[0].text == with_sft
    REGISTRY.release_policies()
