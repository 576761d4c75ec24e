"""What one tool-call retry (``rollout.tool_retries``) costs and buys in synthesis: one rollout
step over every train question of a preset (one call, no response cache, no Prefect), with the
time per phase and the repairs per tool. The repair phase against the other phases of the same
run is the cost (contention on a shared machine slows every phase alike).

    python bench/repairs.py [--config configs/demo.yaml] [--retries 1] [--set k=v ...]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from spark_core.config import load_config  # noqa: E402
from spark_core.data.questions import Split, ingest_records  # noqa: E402
from spark_core.data.sources import read_source  # noqa: E402
from spark_core.models.generator import make_generator  # noqa: E402
from spark_core.models.judge.judge import make_judge  # noqa: E402
from spark_core.protocol import Question  # noqa: E402
from spark_core.synthesis.rollout import rollout_step  # noqa: E402
from tasks.tools import sandbox_for  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--retries", type=int, default=1)
    parser.add_argument("--set", action="append", default=[], help="section.key=value")
    args = parser.parse_args()
    runs = tempfile.mkdtemp(prefix="spark-bench-")
    overrides = [f"rollout.tool_retries={args.retries}", *args.set, f"runtime.runs_dir={runs}"]
    cfg = load_config(args.config, overrides)
    rows = ingest_records(read_source(cfg.data.source), cfg.data).questions.to_pylist()
    questions = [Question.from_row(r) for r in rows if r["split"] == Split.TRAIN]
    generator, judge = make_generator(cfg.generator, None), make_judge(cfg.judge, None)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    candidates, _ = rollout_step(
        cfg,
        1,
        questions,
        {q.question_id: "" for q in questions},
        generator,
        judge,
        sandbox_for(cfg),
        timings,
    )
    wall = time.perf_counter() - start
    print(
        f"{args.config}, rollout.tool_retries={args.retries}: {len(questions)} questions, "
        f"{candidates.num_rows} candidates, one step in {wall:.1f} s"
    )
    print("  phases (s):", {k: round(v, 1) for k, v in sorted(timings.items())})
    if "repairs" in timings:
        rest = sum(v for k, v in timings.items() if k != "repairs")
        print(f"  repairs / the other phases: {timings['repairs'] / rest:.1%}")
    calls, errors, tried, fixed = Counter(), Counter(), Counter(), Counter()
    for c in candidates.to_pylist():
        calls[c["action"]] += 1
        errors[c["action"]] += c["status"] != "ok"
        tried[c["action"]] += bool(c["repair_attempts"])
        fixed[c["action"]] += bool(c["repair_succeeded"])
    for a in cfg.rollout.actions:
        print(
            f"  {a:<16} failing after repair {errors[a]:3d}/{calls[a]:3d}, "
            f"repaired {fixed[a]:3d}/{tried[a]:3d}"
        )
    print(f"  repaired {sum(fixed.values())} of {sum(tried.values())} failed calls")


if __name__ == "__main__":
    main()
