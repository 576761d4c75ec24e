import re
import textwrap
from pathlib import Path
from typing import get_args

import pytest
from pydantic import BaseModel, Field

from spark_core.config import ConfigError, RunConfig, load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("preset", ["demo.yaml", "paper.yaml", "paper-no-diversity.yaml"])
def test_presets_load(preset):
    cfg = load_config(CONFIGS / preset)
    assert isinstance(cfg, RunConfig)


def test_paper_preset_is_the_published_setting():
    cfg = load_config(CONFIGS / "paper.yaml")
    assert cfg.data.total == 2500
    assert cfg.rollout.steps == 5
    assert len(cfg.rollout.actions) == 9 and "cot" in cfg.rollout.actions
    assert cfg.rollout.viable_threshold == 6.0
    assert cfg.rollout.selection == "lowest_viable"  # the paper's method sentence
    assert cfg.judge.grade == "integer"
    assert (cfg.data.eval_total, cfg.data.eval_fraction) == (1400, 0.3)  # the fraction unused
    assert cfg.generator.name == "meta-llama/Llama-3.1-8B-Instruct"
    assert (cfg.judge.backend, cfg.judge.name) == ("openai", "gpt-4o")
    assert cfg.training.quantization == "4bit"


def test_no_diversity_ablation_is_the_paper_preset_without_the_term():
    """paper-no-diversity.yaml extends paper.yaml: loaded, the two configs differ in the
    diversity weight and the run name only (a field the ablation overrode by mistake, or a
    merge that lost one of paper.yaml's sections, fails here)."""
    paper = load_config(CONFIGS / "paper.yaml").model_dump()
    ablation = load_config(CONFIGS / "paper-no-diversity.yaml").model_dump()
    assert ablation["rewards"]["w_diversity"] == 0.0 and paper["rewards"]["w_diversity"] > 0
    assert ablation["runtime"]["run_name"] == "paper-no-diversity"
    for cfg in (paper, ablation):
        del cfg["rewards"]["w_diversity"], cfg["runtime"]["run_name"]
    assert ablation == paper


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def test_extends_deep_merges_the_child_over_the_parent(tmp_path):
    _write(
        tmp_path / "base.yaml",
        """
        data: {total: 40, seed: 3}
        rollout: {steps: 4, actions: [calculator, python, cot]}
        rewards: {w_diversity: 0.7}
        """,
    )
    child = _write(
        tmp_path / "child.yaml",
        """
        extends: base.yaml
        data: {seed: 5}                 # one field of a section: the others stay the parent's
        rollout: {actions: [cot]}       # a list replaces the parent's, it is not appended to
        training: {sft: {epochs: 2}}    # a section the parent does not set
        """,
    )
    cfg = load_config(child, ["rewards.w_diversity=0.1"])
    assert (cfg.data.total, cfg.data.seed) == (40, 5)
    assert (cfg.rollout.steps, cfg.rollout.actions) == (4, ["cot"])
    assert cfg.training.sft.epochs == 2
    assert cfg.rewards.w_diversity == 0.1  # --set still applies last
    assert "extends" not in cfg.model_dump()  # not a config field
    assert load_config(tmp_path / "base.yaml").rollout.actions == ["calculator", "python", "cot"]


def test_extends_is_relative_to_the_extending_file_and_chains(tmp_path, monkeypatch):
    _write(tmp_path / "presets" / "root.yaml", "data: {total: 30}\nrollout: {steps: 3}\n")
    _write(tmp_path / "presets" / "mid.yaml", "extends: root.yaml\nrollout: {steps: 2}\n")
    leaf = _write(
        tmp_path / "runs" / "mine" / "leaf.yaml",
        "extends: ../../presets/mid.yaml\ndata: {seed: 9}\n",
    )
    monkeypatch.chdir(tmp_path / "runs")  # resolved against leaf.yaml's folder, not the cwd
    cfg = load_config("mine/leaf.yaml")
    assert (cfg.data.total, cfg.rollout.steps, cfg.data.seed) == (30, 2, 9)
    assert load_config(leaf).model_dump() == cfg.model_dump()


def test_an_extends_cycle_is_refused_naming_the_files(tmp_path):
    a = _write(tmp_path / "a.yaml", "extends: b.yaml\n")
    _write(tmp_path / "b.yaml", "extends: a.yaml\n")
    with pytest.raises(ConfigError, match="circle") as err:
        load_config(a)
    assert f"{a} -> {tmp_path / 'b.yaml'} -> {a}" in str(err.value)
    itself = _write(tmp_path / "self.yaml", "extends: ./self.yaml\n")
    with pytest.raises(ConfigError, match="circle"):
        load_config(itself)


def test_a_bad_field_in_the_child_names_the_childs_file(tmp_path):
    _write(tmp_path / "base.yaml", "rewards: {w_diversity: 0.7}\n")
    child = _write(tmp_path / "child.yaml", "extends: base.yaml\nrewards: {w_diversty: 0}\n")
    with pytest.raises(ConfigError) as err:
        load_config(child)
    first, *fields = str(err.value).splitlines()
    assert first.startswith(f"{child} (extends {tmp_path / 'base.yaml'})")
    assert any("rewards.w_diversty" in line for line in fields)


def test_a_bad_extends_names_both_files(tmp_path):
    child = _write(tmp_path / "child.yaml", "extends: missing.yaml\n")
    with pytest.raises(ConfigError, match="config file not found") as err:
        load_config(child)
    assert str(tmp_path / "missing.yaml") in str(err.value) and str(child) in str(err.value)
    for value in ("[a.yaml, b.yaml]", "''"):
        _write(child, f"extends: {value}\n")
        with pytest.raises(ConfigError, match="extends: expected the path of a preset"):
            load_config(child)
    with pytest.raises(ConfigError, match="extends"):  # not a field: --set cannot extend
        load_config(None, ["extends=paper.yaml"])


def test_set_overrides_are_typed():
    cfg = load_config(
        CONFIGS / "demo.yaml",
        ["data.per_category=3", "rollout.selection=greedy", "data.categories=[math, law]"],
    )
    assert cfg.data.per_category == 3
    assert cfg.rollout.selection == "greedy"
    assert cfg.data.categories == ["math", "law"]


def test_bad_value_names_file_field_and_expectation():
    with pytest.raises(ConfigError) as err:
        load_config(CONFIGS / "demo.yaml", ["data.per_category=-1"])
    msg = str(err.value)
    assert "demo.yaml" in msg and "data.per_category" in msg
    assert "greater than 0" in msg and "-1" in msg


def test_bad_value_in_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("rollout:\n  selection: best_first\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert str(path) in msg and "rollout.selection" in msg
    assert "'rarity_first'" in msg  # what was expected


def test_unknown_field_and_category_are_rejected(tmp_path):
    with pytest.raises(ConfigError, match=r"data\.per_categroy"):
        load_config(None, ["data.per_categroy=3"])
    with pytest.raises(ConfigError, match="unknown categories"):
        load_config(None, ["data.categories=[astrology]"])
    with pytest.raises(ConfigError, match="at most one"):
        load_config(None, ["data.per_category=3", "data.total=10"])


def test_unreadable_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(broken)
    with pytest.raises(ConfigError, match="expected section.key=value"):
        load_config(None, ["data.seed"])


def _undocumented(model: type[BaseModel], path: str = "") -> list[str]:
    """Every field of ``model`` and of the sections nested in it (also inside lists, dicts
    and optionals) whose description is missing or empty."""
    missing = []
    for name, info in model.model_fields.items():
        if not (info.description or "").strip():
            missing.append(path + name)
        pending = [info.annotation]
        while pending:
            tp = pending.pop()
            if isinstance(tp, type) and issubclass(tp, BaseModel):
                missing += _undocumented(tp, f"{path}{name}.")
            else:
                pending.extend(get_args(tp))
    return missing


def test_every_config_field_has_a_description():
    assert _undocumented(RunConfig) == []


def test_the_walk_finds_an_undocumented_nested_field():
    class Inner(BaseModel):
        documented: int = Field(0, description="yes")
        bare: int = 0

    class Outer(BaseModel):
        inner: dict[str, Inner | None] = Field(default_factory=dict, description="nested")

    assert _undocumented(Outer) == ["inner.bare"]


def test_renamed_field_says_its_new_name():
    with pytest.raises(ConfigError, match=r"'sampling_temperature' was renamed to 'evaluation"):
        load_config(None, ["evaluation.sampling_temperature=1.0"])


# every flat training key before the section was grouped, and where it is now
TRAINING_KEYS_MOVED = {
    "epochs": "training.sft.epochs",
    "lora_r": "training.lora.r",
    "lora_alpha": "training.lora.alpha",
    "lora_dropout": "training.lora.dropout",
    "sft_epochs": "training.sft.epochs",
    "sft_data": "training.sft.data",
    "ppo_epochs": "training.ppo.epochs",
    "clip_eps": "training.ppo.clip_eps",
    "kl_coef": "training.ppo.kl_coef",
    "kl_estimator": "training.ppo.kl_estimator",
    "kl_target": "training.ppo.kl_target",
    "entropy_coef": "training.ppo.entropy_coef",
    "old_logprobs": "training.ppo.old_logprobs",
    "behaviour_source": "training.ppo.behaviour_source",
    "behaviour_tolerance": "training.ppo.behaviour_tolerance",
    "candidates": "training.ppo.candidates",
    "dpo_score_margin": "training.dpo.score_margin",
    "dpo_rarity_margin": "training.dpo.rarity_margin",
    "dpo_beta": "training.dpo.beta",
    "dpo_epochs": "training.dpo.epochs",
}


def test_every_old_flat_training_key_is_mapped():
    from spark_core.config.training import MOVED

    assert MOVED == TRAINING_KEYS_MOVED


@pytest.mark.parametrize(("old", "new"), sorted(TRAINING_KEYS_MOVED.items()))
def test_an_old_flat_training_key_names_its_new_place(tmp_path, old, new):
    """From --set and from a preset: the message names the new key, which then loads."""
    value = {
        "lora_dropout": 0.1,
        "sft_data": "greedy",
        "kl_estimator": "k1",
        "old_logprobs": "refresh",
        "behaviour_source": "reference",
        "candidates": "all",
    }.get(old, 2)  # a valid value of the new key
    told = rf"'{old}' moved to '{re.escape(new)}'"
    with pytest.raises(ConfigError, match=told):
        load_config(None, [f"training.{old}={value}"])
    preset = _write(tmp_path / "old.yaml", f"training:\n  {old}: {value}\n")
    with pytest.raises(ConfigError, match=rf"{re.escape(str(preset))}: .*\n  training: .*{told}"):
        load_config(preset)
    section, key = new.split(".")[1:]
    cfg = load_config(None, [f"{new}={value}"])
    assert getattr(getattr(cfg.training, section), key) == value


def test_several_old_training_keys_are_named_at_once():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["training.lora_r=4", "training.dpo_beta=0.2"])
    assert "'lora_r' moved to 'training.lora.r'" in str(err.value)
    assert "'dpo_beta' moved to 'training.dpo.beta'" in str(err.value)


def test_ppo_candidates_chosen_is_now_selected(tmp_path):
    with pytest.raises(ConfigError, match=r"candidates: 'chosen' was renamed to 'selected'"):
        load_config(None, ["training.ppo.candidates=chosen"])
    preset = _write(tmp_path / "old.yaml", "training:\n  ppo: {candidates: chosen}\n")
    with pytest.raises(ConfigError, match=r"training\.ppo: .*'chosen' was renamed to 'selected'"):
        load_config(preset)
    assert load_config(None, ["training.ppo.candidates=selected"]).training.ppo.candidates == (
        "selected"
    )


def test_set_reaches_a_nested_training_field():
    cfg = load_config("configs/demo.yaml", ["training.ppo.epochs=3", "training.lora.r=4"])
    assert (cfg.training.ppo.epochs, cfg.training.lora.r) == (3, 4)
    assert cfg.training.sft.epochs == 1  # the preset's, untouched
    assert cfg.training.ppo.clip_eps == 0.2  # the group's other fields keep their defaults
    with pytest.raises(ConfigError, match=r"training\.ppo\.epoch\b"):
        load_config(None, ["training.ppo.epoch=3"])  # a typo inside a group is named in full
    with pytest.raises(ConfigError, match="'ppo' is not a section"):
        load_config(None, ["training.ppo=3", "training.ppo.epochs=2"])


def test_extends_keeps_the_parents_siblings_of_an_overridden_nested_field(tmp_path):
    _write(
        tmp_path / "parent.yaml",
        """
        training:
          learning_rate: 5.0e-5
          lora: {r: 16, alpha: 32}
          ppo: {epochs: 3, clip_eps: 0.3, old_logprobs: refresh}
        """,
    )
    child = _write(
        tmp_path / "child.yaml",
        """
        extends: parent.yaml
        training:
          ppo: {clip_eps: 0.1}
        """,
    )
    t = load_config(child).training
    assert (t.ppo.clip_eps, t.ppo.epochs, t.ppo.old_logprobs) == (0.1, 3, "refresh")
    assert (t.lora.r, t.lora.alpha, t.learning_rate) == (16, 32, 5.0e-5)
