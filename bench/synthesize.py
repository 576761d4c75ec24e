"""Synthesis throughput on the demo preset, and the cost of a fully cached rerun.

Runs the ``synthesize`` flow in-process twice against a fresh run folder and response cache:
first for real, then with nothing changed. Prints questions per minute, generated tokens per
second, where the time went (generation, tools, judging, model loading, the rest = Prefect,
I/O, the selection's behaviour log-probs and the final answers), and the rerun's time as a
share of the first run (the issue asks < 10%). Prefect's temporary server is started first and
not counted: in ``spark run`` it is up before the stage starts, as it is here.

    python bench/synthesize.py [--config configs/demo.yaml] [--set rollout.steps=1 ...]
        [--passes]   (every forward pass, by the code that asked for it: bench/passes.py)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import fresh_run  # noqa: E402
from bench.passes import PassCounter  # noqa: E402


def prefect_up() -> None:
    from prefect import flow

    flow(name="bench-prefect-up")(lambda: None)()


def main() -> None:
    # one shard: the phases then run one after another, so their times add up to the wall time
    flags = {"--passes": "count every forward pass by the code that asked for it"}
    cfg, args = fresh_run(("rollout.shards=1",), flags)

    from flows.synthesize import synthesize
    from spark_core.artifacts import ArtifactStore
    from spark_core.models.registry import REGISTRY
    from spark_core.synthesis.summary import ACTIONS_SCHEMA, RUN_SCHEMA
    from tasks.synthesize import PHASE_SECONDS
    from tasks.tools import sandbox_for

    start = time.perf_counter()
    prefect_up()  # the temporary API server a first flow run starts (spark run: before any stage)
    server = time.perf_counter() - start

    start = time.perf_counter()
    generator, judge = REGISTRY.stage_models(cfg)
    sandbox_for(cfg)
    loading = time.perf_counter() - start
    passes = PassCounter()
    if args.passes:  # the local models (generator and judge may share one): each wrapped once
        backends = (generator.backend, getattr(judge.scorer, "backend", None))
        models = {id(b.model): b.model for b in backends if hasattr(b, "model")}
        for model in models.values():
            passes.wrap(model)

    start = time.perf_counter()
    result = synthesize(cfg)
    first = time.perf_counter() - start
    phases = dict(PHASE_SECONDS)

    start = time.perf_counter()
    synthesize(cfg)
    rerun = time.perf_counter() - start

    print(f"Prefect's temporary server started in {server:.1f} s (not counted below)")
    run_ref = result.summary.run
    summary = ArtifactStore(cfg.runtime.artifacts_url()).read(run_ref.name, RUN_SCHEMA)
    run = summary.to_pylist()[0]
    total = first + loading
    work = sum(phases.values())
    print(
        f"synthesis, {args.config}: {run['questions']} questions x up to "
        f"{cfg.rollout.steps} steps x {len(cfg.rollout.actions)} candidates "
        f"({cfg.generator.backend} generator, {cfg.judge.backend} judge)"
    )
    print(
        f"  first run:        {total:7.1f} s  ({60 * run['questions'] / total:.1f} questions/min)"
    )
    print(
        f"  generated tokens: {run['generated_tokens']} "
        f"({run['generated_tokens'] / phases.get('generation', 1):.1f} tokens/s in generation)"
    )
    for name, seconds in [
        ("model loading", loading),
        *sorted(phases.items()),
        ("Prefect + I/O + final answers", first - work),
    ]:
        print(f"    {name:<30} {seconds:7.1f} s  {100 * seconds / total:5.1f}%")
    if args.passes:
        print("\n".join(passes.lines()))
    print(f"  cached rerun:     {rerun:7.1f} s  ({100 * rerun / total:.1f}% of the first run)")
    if cfg.rollout.tool_retries:  # rollout.tool_retries: failed calls repaired, per tool
        per_action = ArtifactStore(cfg.runtime.artifacts_url()).read(
            result.summary.actions.name, ACTIONS_SCHEMA
        )
        print(f"  repairs (rollout.tool_retries={cfg.rollout.tool_retries}), repaired / tried:")
        for a in per_action.to_pylist():
            if a["repairs_attempted"]:
                print(
                    f"    {a['action']:<16} {a['repairs_succeeded']:3d} / "
                    f"{a['repairs_attempted']:3d}  ({a['repair_rate']:.0%}); tool errors after "
                    f"repair {a['tool_error_rate']:.0%}"
                )


if __name__ == "__main__":
    main()
