"""Evaluation throughput: questions/s per policy on the demo preset (base, SFT, SPaRK), and
for the adapters, LoRA kept separate (switched on the shared base) versus merged into a copy
of the base weights (``evaluation.merge_adapters``, the default).

Adapters come from the demo run's train stage (``spark train --config configs/demo.yaml``
first); each policy is rolled out on the eval split with a fresh response cache, so every
generation is real.

    python bench/evaluate.py [--config configs/demo.yaml] [--set evaluation.steps=1 ...]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spark_core.config import load_config  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--set", action="append", default=[], help="section.key=value")
    args = parser.parse_args()
    cfg = load_config(args.config, args.set)
    from spark_core.runtime import configure_prefect_env

    configure_prefect_env(cfg.runtime.runs_dir)
    from flows.ingest import ingest
    from flows.train import train
    from spark_core.evaluation.policy_rollout import evaluate_policy
    from spark_core.models.calls import Generator
    from spark_core.models.response_cache import ResponseCache
    from spark_core.models.usage import Usage
    from spark_core.questions import QUESTIONS_SCHEMA
    from spark_core.rollout import Question
    from tasks.caching import store_for
    from tasks.evaluate import generator_for, policy_source
    from tasks.tools import sandbox_for

    adapters = train(cfg)  # cached when the demo run has trained already
    questions_ref = ingest(cfg)["questions"]
    rows = [
        Question.from_row(r)
        for r in store_for(cfg).read(questions_ref.name, QUESTIONS_SCHEMA).to_pylist()
        if r["split"] == "eval"
    ]
    sandbox = sandbox_for(cfg)
    paths = {p: adapters[p]["adapter"] for p in ("sft", "spark")}
    print(
        f"evaluation, {args.config}: {len(rows)} eval questions, up to "
        f"{cfg.evaluation.steps} steps, greedy, {cfg.generator.name} on CPU"
    )
    separate = cfg.model_copy(
        update={"evaluation": cfg.evaluation.model_copy(update={"merge_adapters": False})}
    )
    runs = [
        ("base", "", cfg),
        *(
            (p, m, c)
            for p in ("sft", "spark")
            for m, c in (("LoRA separate", separate), ("LoRA merged", cfg))
        ),
    ]
    seconds = {}
    for policy, mode, run_cfg in runs:
        with tempfile.TemporaryDirectory() as tmp:
            cache = ResponseCache(Path(tmp) / "responses.sqlite")
            generator = generator_for(run_cfg, policy, policy_source(run_cfg, policy, paths))
            fresh = Generator(generator.backend, cache, Usage(cfg.generator.name))
            start = time.perf_counter()
            table = evaluate_policy(run_cfg, policy, rows, fresh, sandbox)
            elapsed = seconds[policy, mode] = time.perf_counter() - start
        acc = sum(table.column("correct").to_pylist()) / table.num_rows
        speedup = (
            f"  {seconds[policy, 'LoRA separate'] / elapsed:.2f}x separate"
            if mode == "LoRA merged"
            else ""
        )
        print(
            f"  {policy:<6} {mode:<14} {len(rows) / elapsed:6.3f} questions/s  "
            f"({elapsed:5.1f} s, accuracy {acc:.0%}){speedup}"
        )


if __name__ == "__main__":
    main()
