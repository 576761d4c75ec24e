"""Fast checks of what the Prefect UI shows: the run form's schema, the report's inline plots
and self-contained HTML, the "served from cache" line (the browser test sees them for real)."""

from __future__ import annotations

import base64

import pyarrow as pa
import pytest
from prefect.exceptions import ParameterTypeError
from prefect.utilities.callables import parameter_schema
from prefect.utilities.schema_tools.validation import ValidationError, validate

from flows.pipeline import pipeline
from spark_core import CATEGORIES
from spark_core.artifacts import ArtifactStore
from spark_core.config import ACTIONS, load_config
from spark_core.evaluation.report import embed_images, write_html
from tasks.caching import served


@pytest.fixture(scope="module")
def schema() -> dict:
    return parameter_schema(pipeline.fn).model_dump()


def _props(schema: dict, section: str) -> dict:
    return schema["definitions"][section]["properties"]


def test_choices_are_multi_selects_with_their_defaults(schema):
    actions = _props(schema, "RolloutConfig")["actions"]
    assert actions["items"]["enum"] == list(ACTIONS) and actions["default"] == list(ACTIONS)
    assert actions["uniqueItems"] is True
    policies = _props(schema, "EvaluationConfig")["policies"]
    assert policies["default"] == ["base", "base@T", "sft", "ppo"]
    categories = _props(schema, "DataConfig")["categories"]
    assert categories["type"] == "array" and categories["items"]["enum"] == list(CATEGORIES)


def test_optional_fields_are_plain_inputs_and_descriptions_keep_placeholders(schema):
    for section in schema["definitions"].values():
        for name, prop in section.get("properties", {}).items():
            assert {"type": "null"} not in prop.get("anyOf", []), name
            assert "&lt;" not in prop.get("description", ""), name  # V2 shows text as written
    root = _props(schema, "RuntimeConfig")["artifacts_root"]
    assert root["type"] == "string"
    assert "default <runs_dir>/<run_name>/artifacts" in root["description"]


def test_form_sections_are_titled_by_words(schema):
    """V2 titles a section by the property's own title before its class's ("DataConfig")."""
    titles = {name: prop["title"] for name, prop in _props(schema, "RunConfig").items()}
    assert titles == {
        "data": "Data",
        "rollout": "Rollout",
        "tools": "Tools",
        "generator": "Generator",
        "judge": "Judge",
        "rewards": "Rewards",
        "training": "Training",
        "evaluation": "Evaluation",
        "runtime": "Runtime",
    }
    training = _props(schema, "TrainingConfig")
    assert {g: training[g]["title"] for g in ("lora", "sft", "ppo", "dpo")} == {
        "lora": "LoRA",
        "sft": "SFT baseline",
        "ppo": "Offline PPO",
        "dpo": "Step-level DPO",
    }


def test_a_bad_value_is_rejected_naming_the_field_and_the_rule(schema):
    params = {"config": load_config("configs/demo.yaml").model_dump(mode="json")}
    validate(params, schema, raise_on_error=True)  # nulls of unset fields are accepted
    params["config"]["data"]["per_category"] = -1
    with pytest.raises(ValidationError, match=r"'config.data.per_category'.*minimum of 0"):
        validate(params, schema, raise_on_error=True)
    params["config"]["data"]["per_category"] = 2
    params["config"]["data"]["categories"] = ["maths"]
    with pytest.raises(ValidationError, match=r"config.data.categories\[0\].*'maths' is not one"):
        validate(params, schema, raise_on_error=True)
    # Prefect's own parameter check refuses it too (the flow's first line does: flows/refuse.py)
    with pytest.raises(ParameterTypeError):
        pipeline.validate_parameters(params)


def test_report_plots_inline_and_as_one_html_file(tmp_path):
    png = base64.b64decode(
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
    )
    (tmp_path / "accuracy.png").write_bytes(png)
    text = "# Report\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n![accuracy](accuracy.png)\n"
    text += "![gone](gone.png)\n"
    inline = embed_images(text, tmp_path)
    uri = inline.split("![accuracy](", 1)[1].split(")", 1)[0]
    assert base64.b64decode(uri.removeprefix("data:image/png;base64,")) == png
    assert "![gone](gone.png)" in inline  # a missing file stays a plain link
    html = write_html(text, tmp_path).read_text()
    assert f'<img src="{uri}" alt="accuracy"' in html and "<table>" in html


def test_served_from_cache_counts_the_model_calls_it_saved(tmp_path):
    store = ArtifactStore(str(tmp_path))
    calls = {c: [10, 12, 9] for c in ("judge_prompt_tokens", "judge_completion_tokens")}
    scores = pa.table({**calls, "judge_cached": [False] * 3})
    store.write("unit/scores", scores, scores.schema, stage="t")
    gen = pa.table({"gen_prompt_tokens": [5, 5], "gen_completion_tokens": [3, 3]})
    store.write("unit/candidates", gen, gen.schema, stage="t")
    assert (
        served(store, ["unit/candidates", "unit/scores"])
        == "3 judge calls, 2 generator calls, 0 paid (2 artifacts, 5 rows)"
    )
    questions = pa.table({"q": [1]})
    store.write("other/questions", questions, questions.schema, stage="t")
    assert served(store, ["other/questions"]) == "no model calls (1 artifacts, 1 rows)"
