"""per_candidate vs per_state judging on the demo's candidates with the local judge.

Rolls out the demo's train questions for one step (configs/demo.yaml: SmolLM2-135M generator
and judge, the real sandboxed tools), whose judge scores each candidate (next-token expected
score, the step's shared prefix computed once), then scores the same candidates per state
(the JSON of all nine scores written on one KV cache). Prints the rank
agreement (Spearman), the share of candidates whose viability (> rollout.viable_threshold)
differs, and the judging time of each mode in this process.

    python bench/judge_agreement.py [--questions 14] [--threshold 4.0] [--set KEY=VALUE]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from spark_core.config import load_config  # noqa: E402
from spark_core.data.questions import Split, ingest_records  # noqa: E402
from spark_core.data.sources import read_source  # noqa: E402
from spark_core.models.generator import make_generator  # noqa: E402
from spark_core.models.judge.agreement import agreement  # noqa: E402
from spark_core.models.judge.judge import make_judge  # noqa: E402
from spark_core.models.judge.per_state import HFStateJudge  # noqa: E402
from spark_core.models.judge.prompt import JudgeItem  # noqa: E402
from spark_core.protocol import Question  # noqa: E402
from spark_core.synthesis.rollout import rollout_step  # noqa: E402
from spark_core.tools.sandbox import Sandbox, SandboxLimits  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--questions", type=int, default=14)
    parser.add_argument("--threshold", type=float, default=None)
    parser.add_argument("--set", action="append", default=[], help="section.key=value")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(str(ROOT / "configs/demo.yaml"), [f"runtime.runs_dir={tmp}", *args.set])
        rows = ingest_records(read_source(cfg.data.source), cfg.data).questions.to_pylist()
        train = [Question.from_row(r) for r in rows if r["split"] == Split.TRAIN][: args.questions]
        generator, judge = make_generator(cfg.generator, None), make_judge(cfg.judge, None)
        limits = SandboxLimits.from_config(cfg.tools)
        with Sandbox(limits, {"corpus": cfg.tools.corpus}) as sandbox:
            timings: dict[str, float] = {}
            candidates, scores = rollout_step(
                cfg,
                1,
                train,
                {q.question_id: "" for q in train},
                generator,
                judge,
                sandbox,
                timings,
            )
    by_id = {q.question_id: q for q in train}
    items = [
        JudgeItem(
            by_id[c["question_id"]].question,
            by_id[c["question_id"]].options,
            "",
            c["action"],
            c["tool_input"],
            c["output"] if c["status"] == "ok" else f"{c['status']}: {c['error']}",
            c["thought"],
        )
        for c in candidates.to_pylist()
    ]
    one = scores.column("score").to_pylist()  # the rollout's own per-candidate judgements
    one_s = timings["judging"]
    start = time.perf_counter()
    state = HFStateJudge(judge.scorer).score(items)
    state_s = time.perf_counter() - start
    threshold = cfg.rollout.viable_threshold if args.threshold is None else args.threshold
    found = agreement(one, [j.score for j in state], threshold)
    print(f"demo candidates: {len(items)} ({len(train)} states)")
    for line in found.lines():
        print(line)
    print(f"per_candidate judging: {one_s:.2f} s; per_state: {state_s:.2f} s")
    per_state = [j.score for j in state]
    print(
        f"mean score per_candidate {sum(one) / len(one):.2f}, per_state "
        f"{sum(per_state) / len(per_state):.2f}"
    )


if __name__ == "__main__":
    main()
