"""Evaluate tasks: one cached rollout per policy on the eval split, then the summary and the
report (Parquet, Markdown, PNGs, Prefect artifacts)."""

from __future__ import annotations

import math
from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from spark_core.artifacts import ArtifactRef, canonical_hash, stage_key
from spark_core.config import ModelConfig, RunConfig
from spark_core.data.questions import QUESTIONS_SCHEMA, Split
from spark_core.evaluation.assemble import STORED_BESIDE, build_report
from spark_core.evaluation.common_schema import COMMON_STATES_SCHEMA
from spark_core.evaluation.common_states import stratified_subset
from spark_core.evaluation.model_calls import CALLS_SCHEMA, calls_table
from spark_core.evaluation.policies import evaluated_policy
from spark_core.evaluation.policy_rollout import EVAL_ROWS_SCHEMA, STAGE_VERSION, evaluate_policy
from spark_core.evaluation.productivity import overall_records
from spark_core.evaluation.report import embed_images
from spark_core.evaluation.report_folder import point_latest, report_folder
from spark_core.models.generator import Generator
from spark_core.models.hf.backend import directory_hash
from spark_core.models.registry import REGISTRY
from spark_core.models.stop_rules import Budget
from spark_core.protocol import Question
from tasks.caching import Unit, cached_unit, rows, store_for, ui_key, unit_task
from tasks.results import Report
from tasks.tools import sandbox_for


def _local(cfg: RunConfig, uri: str) -> str:
    """A local folder for an adapter URI (downloaded from the artifact root when remote)."""
    store = store_for(cfg)
    if uri.startswith(store.root) and not Path(uri).exists():
        target = cfg.runtime.run_dir("adapters", Path(uri).parent.name)
        store.get_folder(uri, target)
        return str(target)
    return uri


def policy_source(cfg: RunConfig, policy: str, adapters: dict[str, str]) -> dict:
    """What a rollout (``evaluated_policies``) is: the generator plus an adapter (by rollout
    name in ``adapters``), the generator sampled at a temperature, or another model."""
    if policy in cfg.evaluation.extra_models:
        return {"model": cfg.evaluation.extra_models[policy].model_dump(mode="json")}
    target = evaluated_policy(cfg, policy)
    if policy not in adapters:
        if target.trained:
            raise ValueError(f"no trained adapter for {policy!r} (have: {sorted(adapters)})")
        source = {"model": cfg.section("generator"), "adapter": None}
        return source | ({"temperature": target.temperature} if target.temperature else {})
    path = _local(cfg, adapters[policy])
    return {"model": cfg.section("generator"), "adapter": path, "hash": directory_hash(path)}


def eval_unit(cfg: RunConfig, policy: str, questions: ArtifactRef, source: dict) -> Unit:
    sections = {
        "evaluation": {
            k: v
            for k, v in cfg.section("evaluation").items()
            if k in ("steps", "seed", "action_decoding", "rollout_questions")
        },
        "actions": cfg.rollout.actions,
        "tokens": [cfg.rollout.thought_tokens, cfg.rollout.input_tokens],
        "tool_retries": cfg.rollout.tool_retries,
        "policy": {k: v for k, v in source.items() if k != "adapter"},
    }
    key = stage_key("evaluate", STAGE_VERSION, sections, {"questions": questions.content_hash})
    return Unit(
        "evaluate",
        key,
        {  # the rows last: their presence marks the unit complete
            f"evaluate/{key[:16]}/calls_{policy}": CALLS_SCHEMA,
            f"evaluate/{key[:16]}/rows_{policy}": EVAL_ROWS_SCHEMA,
        },
        cfg.section("evaluation"),
        {"questions": questions.content_hash, "policy": canonical_hash(source)},
        what=policy,
    )


def generator_for(cfg: RunConfig, policy: str, source: dict) -> Generator:
    """The generator a policy runs on, from the model registry (see policy_source)."""
    if "adapter" not in source:  # an extra model
        return REGISTRY.policy(cfg, policy, model=ModelConfig(**source["model"]))
    return REGISTRY.policy(
        cfg, policy, adapter=source.get("adapter"), adapter_hash=source.get("hash", "")
    )


def _paid_model(cfg: RunConfig, policy: str) -> tuple[ModelConfig, str]:
    """The model a policy's calls are paid on, and the config field of its cost limit."""
    if policy in cfg.evaluation.extra_models:
        return cfg.evaluation.extra_models[policy], f"evaluation.extra_models.{policy}"
    return cfg.generator, "generator"


def held_out(cfg: RunConfig, questions: ArtifactRef) -> list[Question]:
    """Every held-out question of the run (the eval split)."""
    table = rows(store_for(cfg), [questions], QUESTIONS_SCHEMA)
    split = [Question.from_row(r) for r in table if r["split"] == Split.EVAL]
    if not split:
        raise ValueError(f"{questions.uri} has no eval questions (data.eval_fraction is 0?)")
    return split


@unit_task("evaluate-policy", eval_unit, "evaluate-{policy}")
def evaluate_one(cfg: RunConfig, policy: str, questions: ArtifactRef, source: dict) -> ArtifactRef:
    """Roll one policy out on the eval split (no judge)."""
    unit = eval_unit(cfg, policy, questions, source)

    def compute():
        split = stratified_subset(  # the rollouts' questions; the common states use them all
            held_out(cfg, questions), cfg.evaluation.rollout_questions, cfg.evaluation.seed
        )
        generator = generator_for(cfg, policy, source)
        name = list(unit.outputs)[-1]
        scope = f"evaluate/{name}"
        budget = Budget.for_model(*_paid_model(cfg, policy), scope, REGISTRY.response_cache(cfg))
        table = evaluate_policy(
            cfg, policy, split, generator.with_stop_rules(budget), sandbox_for(cfg)
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
        return [calls_table(policy, generator.usage), table]

    try:
        return cached_unit(store_for(cfg), unit, compute, lambda r: r[-1])
    finally:  # the policy is done: free its merged copy or detach its adapter
        REGISTRY.release_policies()


@task(name="evaluation-report", task_run_name="evaluation-report")
def report(
    cfg: RunConfig, eval_rows: list[ArtifactRef], common_states: ArtifactRef | None = None
) -> Report:
    """The claims, eval_summary (policy x category), usage, paired tests, common-state
    entropy, tool productivity and the per-category tool maps, Markdown + PNG report."""
    store = store_for(cfg)
    hashes = [r.content_hash for r in eval_rows]
    key = canonical_hash(hashes + ([common_states.content_hash] if common_states else []))[:16]
    local = report_folder(cfg.runtime.run_dir(), _run_id() or key)
    common = rows(store, [common_states], COMMON_STATES_SCHEMA) if common_states else None
    built = build_report(cfg, rows(store, eval_rows, EVAL_ROWS_SCHEMA), local, common)
    point_latest(local)
    meta = {"stage": "evaluate", "config": cfg.section("evaluation"), "inputs": {"eval_rows": key}}
    folder = f"evaluate/report_{key}"
    refs = {
        name: store.write(f"{folder}/eval_{name}", table, schema, **meta)
        for name, (table, schema) in built.tables.items()
    }
    beside = {"claims": built.claims, "common_entropy": built.common_entropy}
    refs |= {
        name: store.write(f"{folder}/eval_{name}", table, STORED_BESIDE[name], **meta)
        for name, table in beside.items()
        if table is not None
    }
    if not store.is_local:  # publish the report next to the artifacts
        store.put_folder(local, f"{folder}/report")
    slug = ui_key("evaluation", cfg)
    # plots as data URIs: the UI cannot load the run folder's files (nor file:// links)
    create_markdown_artifact(
        embed_images(built.text, local) + f"\nFiles: `{built.html.resolve()}` (self-contained) "
        f"and `{built.markdown.resolve()}`.\n",
        key=slug,
        description="SPaRK evaluation report",
    )
    create_table_artifact(
        [
            r
            for r in built.tables["summary"][0].to_pylist()
            if r["category"] == "overall" and r["seed"] == -1  # pooled over seeds
        ],
        key=f"{slug}-overall",
        description="Accuracy and entropy per policy",
    )
    create_table_artifact(
        [
            {k: v if not isinstance(v, float) or math.isfinite(v) else None for k, v in r.items()}
            for r in built.claims.to_pylist()
        ],
        key=f"{slug}-claims",
        description="The paper's claims: estimate, 95% CI, Holm-adjusted p, verdict",
    )
    create_table_artifact(
        overall_records(built.tables["productivity"][0]),
        key=f"{slug}-productivity",
        description="Tool productivity per policy",
    )
    return Report(
        **refs,
        report=str(built.markdown),
        html=str(built.html),
        images=tuple(str(p) for p in built.images.values()),
        tool_maps=tuple(str(p) for p in built.tool_maps.values()),
        accuracy_entropy=str(built.accuracy_entropy),
        model_calls=tuple(store.ref(r.name.replace("/rows_", "/calls_")) for r in eval_rows),
    )


def _run_id() -> str | None:
    """The id of the run this report belongs to: the outermost flow run (the pipeline, or
    the stage run when a stage runs alone), stable across its retries."""
    from prefect.runtime import flow_run

    try:
        return flow_run.root_flow_run_id or None
    except Exception:  # no API to ask (a plain call outside a run): the key names it
        return None
