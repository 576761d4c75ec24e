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
    paper = load_config(CONFIGS / "paper.yaml").model_dump()
    ablation = load_config(CONFIGS / "paper-no-diversity.yaml").model_dump()
    assert ablation["rewards"]["w_diversity"] == 0.0 and paper["rewards"]["w_diversity"] > 0
    assert ablation["runtime"]["run_name"] == "paper-no-diversity"
    for cfg in (paper, ablation):
        del cfg["rewards"]["w_diversity"], cfg["runtime"]["run_name"]
    assert ablation == paper


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


def test_renamed_field_says_its_new_name(tmp_path):
    with pytest.raises(ConfigError, match=r"'epochs' was renamed to 'training\.sft_epochs'"):
        load_config(None, ["training.epochs=2"])
    path = tmp_path / "old.yaml"
    path.write_text("training:\n  epochs: 2\n")
    with pytest.raises(ConfigError, match=r"training: .*renamed to 'training\.sft_epochs'"):
        load_config(path)
    assert load_config(None, ["training.sft_epochs=2"]).training.sft_epochs == 2
