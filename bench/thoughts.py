"""What ``rollout.thoughts: per_action`` costs and buys against ``shared``.

Runs the ``synthesize`` flow twice in-process, each against its own fresh run folder and
response cache (nothing shared): once with one thought per step shared by the candidates, once
with a thought per candidate written with its action fixed in the prompt. Prints the time per
phase, and the synthesis summary's thought-action figures: how often the selected step's
thought names a tool, and how often it names tools other than the selected action.

    python bench/thoughts.py [--config configs/demo.yaml] [--set rollout.steps=2 ...]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def run(config: str, overrides: list[str]) -> tuple[float, dict[str, float], dict]:
    from spark_core.artifacts import ArtifactStore
    from spark_core.config import load_config
    from spark_core.runtime import configure_prefect_env

    runs = tempfile.mkdtemp(prefix="spark-bench-")
    cfg = load_config(config, [*overrides, "rollout.shards=1", f"runtime.runs_dir={runs}"])
    configure_prefect_env(runs)
    os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
    from flows.synthesize import synthesize
    from spark_core.models.registry import REGISTRY
    from spark_core.synthesis.summary import RUN_SCHEMA
    from tasks.synthesize import PHASE_SECONDS

    REGISTRY.stage_models(cfg)  # loading is not what is compared
    PHASE_SECONDS.clear()
    start = time.perf_counter()
    result = synthesize(cfg)
    seconds = time.perf_counter() - start
    store = ArtifactStore(cfg.runtime.artifacts_url())
    return (
        seconds,
        dict(PHASE_SECONDS),
        store.read(result.summary.run.name, RUN_SCHEMA).to_pylist()[0],
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--set", action="append", default=[], help="section.key=value")
    args = parser.parse_args()
    results = {}
    for mode in ("shared", "per_action"):
        results[mode] = run(args.config, [*args.set, f"rollout.thoughts={mode}"])
    base = results["shared"][0]
    print(f"rollout.thoughts, {args.config} {' '.join(args.set)}")
    for mode, (seconds, phases, summary) in results.items():
        phase_text = ", ".join(f"{k} {v:.1f} s" for k, v in sorted(phases.items()))
        print(
            f"  {mode:<10} {seconds:6.1f} s ({seconds / base:.2f}x shared): {phase_text}; "
            f"{summary['questions']} questions, {summary['steps']} selected steps; thought "
            f"names a tool {summary['thought_names_tool_rate']:.1%}, names another tool than "
            f"the selected action {summary['thought_mismatch_rate']:.1%}; selected-action "
            f"entropy {summary['normalized_entropy']:.3f}"
        )


if __name__ == "__main__":
    main()
