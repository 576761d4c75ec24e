"""The evaluate flow on a tiny random model (base + two adapters), and score-outputs."""

from __future__ import annotations

import json

import pytest

from spark_core import CATEGORIES
from spark_core.artifacts import ArtifactStore
from spark_core.evaluation.claims import CLAIMS_SCHEMA, Verdict
from spark_core.evaluation.common_entropy import COMMON_ENTROPY_SCHEMA
from spark_core.evaluation.policy_rollout import EVAL_ROWS_SCHEMA
from spark_core.evaluation.productivity import PRODUCTIVITY_SCHEMA
from spark_core.evaluation.report import ENTROPY_TESTS_SCHEMA, PAIRS_SCHEMA, SUMMARY_SCHEMA
from spark_core.evaluation.score_outputs import score_file
from tasks.results import Adapters
from tests.helpers import random_adapter, task_states

VERDICTS = (Verdict.SUPPORTED, Verdict.NOT_SUPPORTED, Verdict.INCONCLUSIVE)


@pytest.fixture(scope="module")
def adapters(tiny_model_dir, tmp_path_factory):
    out = {}
    for name, seed in (("sft", 1), ("ppo", 2)):
        path = tmp_path_factory.mktemp(name)
        random_adapter(tiny_model_dir, seed).save_pretrained(path)
        out[name] = str(path)
    return out


@pytest.mark.usefixtures("prefect_harness")
def test_evaluate_flow_writes_summary_report_and_plots(tiny_model_dir, adapters, tmp_path):
    from flows.evaluate import evaluate
    from spark_core.config import load_config

    cfg = load_config(
        "configs/demo.yaml",
        [
            f"runtime.runs_dir={tmp_path}",
            f"generator.name={tiny_model_dir}",
            "rollout.thought_tokens=10",
            "rollout.input_tokens=6",
            "evaluation.steps=2",
            "evaluation.policies=[base, base@T]",
            "evaluation.bootstrap_samples=200",
            f"evaluation.extra_adapters={json.dumps(adapters)}",
        ],
    )
    state = evaluate(cfg, adapters=Adapters({}), return_state=True)
    result = state.result()
    store = ArtifactStore(cfg.runtime.artifacts_url())
    summary = store.read(result.summary.name, SUMMARY_SCHEMA).to_pylist()
    policies = ("base", "base@1", "sft", "ppo")
    assert {(r["policy"], r["category"]) for r in summary} == {
        (p, c) for p in policies for c in (*CATEGORIES, "overall")
    }
    for r in summary:
        assert r["ci_low"] <= r["accuracy"] <= r["ci_high"]
        assert 0.0 <= r["normalized_entropy"] <= 1.0
        assert r["state_entropy_ci_low"] <= r["state_entropy_bits"] <= r["state_entropy_ci_high"]
        assert r["entropy_ci_low"] <= r["entropy_bits"] <= r["entropy_ci_high"]
        assert 0.0 <= r["state_normalized_entropy"] <= 1.0 and r["invalid_rate"] == 0.0
    assert len(store.read(result.pairs.name, PAIRS_SCHEMA).to_pylist()) == 6
    tests = store.read(result.entropy_tests.name, ENTROPY_TESTS_SCHEMA).to_pylist()
    assert {(t["policy_b"], t["figure"]) for t in tests} == {
        (p, f)
        for p in ("base", "base@1", "sft")
        for f in ("per-state", "per-state tools", "pooled")
    }
    assert all(0.0 < t["p_value"] <= 1.0 and t["n_questions"] == 14 for t in tests)
    report = open(result.report).read()
    assert "## Entropy tests" in report and "## Paired accuracy differences" in report
    assert "| ppo |" in report and "| base@1 |" in report
    assert "## Tool productivity" in report and "## Tool map per category" in report
    assert len(result.images) == 3 and len(result.tool_maps) == 4  # one per policy
    assert all(f"![tool map {p}](" in report for p in policies)
    productivity = store.read(result.productivity.name, PRODUCTIVITY_SCHEMA).to_pylist()
    assert len(productivity) == len(summary)  # the same policy x category cells
    for image in result.images + result.tool_maps:
        assert open(image, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    rows_refs = [r for r in store.fs.find(store.fs_path("")) if "/rows_" in r]
    assert len(rows_refs) == 4
    name = rows_refs[0][len(store.fs_path("")) + 1 : -len(".parquet")]
    rows = store.read(name, EVAL_ROWS_SCHEMA).to_pylist()
    assert len(rows) == 14 and all(r["final_answer"] in "ABCDEFGHIJ" for r in rows)

    # the claims open the report; the entropy claims run on the common states
    assert report.index("## Claims") < report.index("## Overall")
    claims = {c["claim_id"]: c for c in store.read(result.claims.name, CLAIMS_SCHEMA).to_pylist()}
    assert claims["entropy_above_base"]["questions"] == 14
    assert claims["entropy_above_base"]["verdict"] in VERDICTS
    common = store.read(result.common_entropy.name, COMMON_ENTROPY_SCHEMA).to_pylist()
    assert {r["policy"] for r in common} == set(policies)
    assert all(r["questions"] == 14 for r in common)
    tempered = {r["policy"]: r["entropy_bits"] for r in common}
    assert tempered["base@1"] == pytest.approx(tempered["base"])  # T = 1: base as it is

    again = evaluate(cfg, adapters=Adapters({}), return_state=True)  # cached per policy
    assert set(task_states(again)["evaluate-policy"]) == {"Cached"}


def test_score_outputs_uses_the_cascade_and_the_guess_rule(tmp_path):
    records = [
        {
            "question_id": 1,
            "answer": "B",
            "category": "math",
            "model_outputs": "so the answer is (B)",
        },
        {"question_id": 2, "answer": "C", "category": "math", "model_outputs": "Answer: D"},
        {"question_id": 3, "answer": "A", "category": "law", "generated_text": "I pick A."},
        {
            "question_id": 4,
            "answer": "A",
            "category": "law",
            "model_outputs": "no idea",
            "options": ["x"],
        },  # one option: the guess must be A
    ]
    path = tmp_path / "outputs.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records))
    per_category, overall = score_file(str(path))
    assert per_category["math"] == {"n": 2, "correct": 1, "no_answer": 0, "accuracy": 0.5}
    assert per_category["law"] == {"n": 2, "correct": 2, "no_answer": 1, "accuracy": 1.0}
    assert overall["accuracy"] == 0.75
    with pytest.raises(ValueError, match="line 1"):
        (tmp_path / "bad.jsonl").write_text("{oops")
        score_file(str(tmp_path / "bad.jsonl"))
