"""Evaluate tasks: one cached rollout per policy on the eval split, then the summary and the
report (Parquet, Markdown, PNGs, Prefect artifacts)."""

from __future__ import annotations

import threading
from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from spark_core.artifacts import ArtifactRef, canonical_hash, stage_key
from spark_core.config import SAMPLED_POLICY, ModelConfig, RunConfig
from spark_core.evaluation.plots import plot
from spark_core.evaluation.policy_rollout import CODE_VERSION, EVAL_ROWS_SCHEMA, evaluate_policy
from spark_core.evaluation.repairs import REPAIRS_SCHEMA, repair_table
from spark_core.evaluation.report import (
    ENTROPY_TESTS_SCHEMA,
    PAIRS_SCHEMA,
    SUMMARY_SCHEMA,
    USAGE_SCHEMA,
    embed_images,
    markdown,
    summarize,
    write_html,
)
from spark_core.models.calls import Generator, make_generator
from spark_core.models.guards import StageStopped
from spark_core.models.hf_backend import HFBackend, directory_hash
from spark_core.models.usage import Usage
from spark_core.questions import QUESTIONS_SCHEMA
from spark_core.rollout import Question
from tasks.caching import cache_key_from, existing, is_local, store_for
from tasks.models import response_cache
from tasks.stage_guards import budget_for, stopped_state
from tasks.tools import sandbox_for

_BACKENDS: dict[str, HFBackend] = {}
_LOCK = threading.Lock()


def _local(cfg: RunConfig, uri: str) -> str:
    """A local folder for an adapter URI (downloaded from the artifact root when remote)."""
    store = store_for(cfg)
    if uri.startswith(store.root) and not Path(uri).exists():
        target = (
            Path(cfg.runtime.runs_dir) / cfg.runtime.run_name / "adapters" / Path(uri).parent.name
        )
        store.get_folder(uri, target)
        return str(target)
    return uri


def policy_source(cfg: RunConfig, policy: str, adapters: dict[str, str]) -> dict:
    """What a policy is: the generator plus an adapter, or another model."""
    if policy in cfg.evaluation.extra_models:
        return {"model": cfg.evaluation.extra_models[policy].model_dump(mode="json")}
    if policy == "base":
        return {"model": cfg.section("generator"), "adapter": None}
    if policy == SAMPLED_POLICY:
        temperature = cfg.evaluation.sampling_temperature
        return {"model": cfg.section("generator"), "adapter": None, "temperature": temperature}
    path = _local(cfg, adapters[policy])
    return {"model": cfg.section("generator"), "adapter": path, "hash": directory_hash(path)}


def eval_key(cfg: RunConfig, policy: str, questions: ArtifactRef, source: dict) -> str:
    sections = {
        "evaluation": {
            k: v
            for k, v in cfg.section("evaluation").items()
            if k in ("steps", "seed", "action_decoding")
        },
        "actions": cfg.rollout.actions,
        "tokens": [cfg.rollout.thought_tokens, cfg.rollout.input_tokens],
        "tool_retries": cfg.rollout.tool_retries,
        "policy": {k: v for k, v in source.items() if k != "adapter"},
    }
    return stage_key("evaluate", CODE_VERSION, sections, {"questions": questions.content_hash})


def _outputs(key: str, policy: str, **_: object) -> list[str]:
    return [f"evaluate/{key[:16]}/rows_{policy}"]


def generator_for(cfg: RunConfig, policy: str, source: dict) -> Generator:
    """The generator a policy runs on: another model, or the shared base with its adapter."""
    if "adapter" not in source:  # an extra model (see policy_source)
        return make_generator(ModelConfig(**source["model"]), response_cache(cfg))
    gen = cfg.generator
    if gen.backend != "hf":
        if source.get("adapter"):
            raise ValueError("adapters need the hf backend (or serve them, e.g. vLLM --lora)")
        return make_generator(gen, response_cache(cfg))
    with _LOCK:
        backend = _BACKENDS.get(gen.name)
        if backend is None:
            backend = _BACKENDS[gen.name] = HFBackend(
                gen.name, gen.device, gen.dtype, gen.batch_size
            )
        if source.get("adapter") and cfg.evaluation.merge_adapters:
            key = f"{gen.name}+{policy}@{source['hash']}"
            if key not in _BACKENDS:
                _BACKENDS[key] = backend.merged(policy, source["adapter"])
            return Generator(_BACKENDS[key], response_cache(cfg), Usage(gen.name))
        if source.get("adapter") and not backend.has_adapter(policy):
            backend.add_adapter(policy, source["adapter"])
        backend.use_adapter(policy if source.get("adapter") else None)
    return Generator(backend, response_cache(cfg), Usage(gen.name))


def _paid_model(cfg: RunConfig, policy: str, source: dict) -> tuple[ModelConfig, str]:
    """The model a policy's calls are paid on, and the config field of its cost limit."""
    if policy in cfg.evaluation.extra_models:
        return cfg.evaluation.extra_models[policy], f"evaluation.extra_models.{policy}"
    return cfg.generator, "generator"


@task(
    name="evaluate-policy",
    cache_key_fn=cache_key_from(
        lambda cfg, policy, questions, source: eval_key(cfg, policy, questions, source), _outputs
    ),
    persist_result=True,
)
def evaluate_one(cfg: RunConfig, policy: str, questions: ArtifactRef, source: dict) -> ArtifactRef:
    """Roll one policy out on the eval split (no judge)."""
    store = store_for(cfg)
    (name,) = _outputs(eval_key(cfg, policy, questions, source), policy)
    done = existing(store, [name])
    if done:
        return done[0]
    rows = [
        Question.from_row(r)
        for r in store.read(questions.name, QUESTIONS_SCHEMA).to_pylist()
        if r["split"] == "eval"
    ]
    if not rows:
        raise ValueError(f"{questions.uri} has no eval questions (data.eval_fraction is 0?)")
    generator = generator_for(cfg, policy, source)
    budget = budget_for(*_paid_model(cfg, policy, source), f"evaluate/{name}", response_cache(cfg))
    try:
        table = evaluate_policy(cfg, policy, rows, generator.guarded(budget), sandbox_for(cfg))
    except StageStopped as exc:  # a cost limit: every finished call is in the response cache
        get_run_logger().error("%s stopped: %s", policy, exc)
        return stopped_state(exc)
    ref = store.write(
        name,
        table,
        EVAL_ROWS_SCHEMA,
        stage="evaluate",
        config=cfg.section("evaluation"),
        inputs={"questions": questions.content_hash, "policy": canonical_hash(source)},
    )
    get_run_logger().info(
        "%s: accuracy %.1f%% on %d eval questions, %d without an answer, %d invalid actions "
        "(%s decoding); generator %s",
        policy,
        100 * sum(table.column("correct").to_pylist()) / table.num_rows,
        table.num_rows,
        sum(table.column("no_answer").to_pylist()),
        sum(table.column("invalid_actions").to_pylist()),
        cfg.evaluation.action_decoding,
        generator.usage.line(),
    )
    return ref


@task(name="evaluation-report")
def report(cfg: RunConfig, rows: list[ArtifactRef]) -> dict:
    """eval_summary (policy x category), usage, paired tests, Markdown + PNG report."""
    store = store_for(cfg)
    all_rows = [r for ref in rows for r in store.read(ref.name, EVAL_ROWS_SCHEMA).to_pylist()]
    summary, usage, pairs, tests = summarize(
        all_rows, cfg.rollout.actions, cfg.evaluation.bootstrap_samples, cfg.evaluation.seed
    )
    key = canonical_hash([r.content_hash for r in rows])[:16]
    meta = {"stage": "evaluate", "config": cfg.section("evaluation"), "inputs": {"eval_rows": key}}
    folder = f"evaluate/report_{key}"
    refs = {
        "summary": store.write(f"{folder}/eval_summary", summary, SUMMARY_SCHEMA, **meta),
        "usage": store.write(f"{folder}/eval_usage", usage, USAGE_SCHEMA, **meta),
        "pairs": store.write(f"{folder}/eval_pairs", pairs, PAIRS_SCHEMA, **meta),
        "entropy_tests": store.write(
            f"{folder}/eval_entropy_tests", tests, ENTROPY_TESTS_SCHEMA, **meta
        ),
    }
    repairs = None
    if cfg.rollout.tool_retries:
        tools = [a for a in cfg.rollout.actions if a != "cot"]
        repairs = repair_table(all_rows, tools)
        refs["repairs"] = store.write(f"{folder}/eval_repairs", repairs, REPAIRS_SCHEMA, **meta)
    local = Path(cfg.runtime.runs_dir) / cfg.runtime.run_name / "report"
    images = plot(summary, usage, local)
    n = len(cfg.rollout.actions)
    setup = (
        f"Action decoding: **{cfg.evaluation.action_decoding}**; up to {cfg.evaluation.steps} "
        f"steps; `{SAMPLED_POLICY}` is the base model sampled at T = "
        f"{cfg.evaluation.sampling_temperature:g}, every other policy decodes greedily. "
        f"k = {n + 1} action names (the {n} actions and `answer`), m = {n} actions (tools and "
        "`cot`). Column meanings: README, *Evaluation and the report*."
    )
    text = markdown(summary, usage, pairs, tests, images, setup, repairs)
    (local / "report.md").write_text(text)
    html = write_html(text, local)
    if not is_local(store):  # publish the report next to the artifacts
        store.put_folder(local, f"evaluate/report_{key}/report")
    slug = f"evaluation-{cfg.runtime.run_name}".lower().replace("_", "-").replace(".", "-")
    # plots as data URIs: the UI cannot load the run folder's files (nor file:// links)
    create_markdown_artifact(
        embed_images(text, local) + f"\nFiles: `{html.resolve()}` (self-contained) and "
        f"`{(local / 'report.md').resolve()}`.\n",
        key=slug,
        description="SPaRK evaluation report",
    )
    create_table_artifact(
        [r for r in summary.to_pylist() if r["category"] == "overall"],
        key=f"{slug}-overall",
        description="Accuracy and entropy per policy",
    )
    return {
        **refs,
        "report": str(local / "report.md"),
        "html": str(html),
        "images": [str(p) for p in images.values()],
    }
