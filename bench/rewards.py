"""Does the diversity term carry signal? Each reward component's share of the per-step reward
variance, for every selection rule and both diversity terms (``rewards.diversity``).

Two sources of judge scores, both replayed through the project's own functions (the selection
rule ``select_in_order`` with its global usage counts and seeded order, ``diversity_bonuses``,
``step_rewards``, ``variance_shares``):

- **simulated, paper scale** (the default): 2,500 questions x 5 steps x K = 9 candidates,
  threshold 6.0 (strictly above), integer grades 0-10 from a stated model of which tool suits
  which category (``MEANS`` below: an assumption, not a measurement), per-question and
  per-candidate noise; correctness drawn once per question from the mean selected score (the
  same dice under every rule). Every question runs all 5 steps.
- **the demo's labels** (``--demo``): runs the synthesis flow on ``configs/demo.yaml`` (its
  135M local judge; a few minutes on 2 cores) and replays each rule on its real score tables;
  correctness is the run's own (a different selection in another rule keeps the run's outcome).

share = cov(component, reward) / var(reward) over all steps (the shares sum to 1); "d of q+d"
is the diversity term's share of the process reward alone (terminal correctness left out).

    python bench/rewards.py [--questions 2500] [--steps 5] [--seed 0] [--demo]
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
from collections import Counter, defaultdict
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from spark_core import CATEGORIES  # noqa: E402
from spark_core.config import ACTIONS, RewardsConfig  # noqa: E402
from spark_core.data.answers import AnswerSource  # noqa: E402
from spark_core.labeling.rewards import (  # noqa: E402
    diversity_bonuses,
    step_rewards,
    variance_shares,
)
from spark_core.synthesis.selection import select_in_order  # noqa: E402

RULES = ("lowest_viable", "rarity_first", "greedy")
THRESHOLD = 6.0
# The assumed mean grade of each tool in each category (cot suits everything a little).
_SUITS = {
    "calculator": {"math", "physics", "engineering", "business", "economics", "chemistry"},
    "python": {"math", "computer science", "physics", "engineering"},
    "symbolic_math": {"math", "physics", "engineering"},
    "unit_converter": {"physics", "engineering", "chemistry"},
    "chemistry": {"chemistry"},
    "statistics": {"math", "economics", "psychology", "business"},
    "finance": {"business", "economics"},
    "knowledge_search": {
        "biology", "health", "history", "law", "other", "philosophy", "psychology",
    },
}  # fmt: skip
MEANS = {
    (c, a): 6.5 if a == "cot" else (6.5 if c in _SUITS[a] else 3.5)
    for c in CATEGORIES
    for a in ACTIONS
}
# MMLU-Pro test questions per category (the 2,500 are allocated by these sizes)
SIZES = {
    "biology": 717, "business": 789, "chemistry": 1132, "computer science": 410,
    "economics": 844, "engineering": 969, "health": 818, "history": 381, "law": 1101,
    "math": 1351, "other": 924, "philosophy": 499, "physics": 1299, "psychology": 798,
}  # fmt: skip


def simulated_tables(n: int, steps: int, seed: int) -> tuple[list[list], dict[int, str]]:
    """Per step, [(question_id, {action: integer grade})]; and each question's category."""
    rng = random.Random(f"simulate:{seed}")
    total = sum(SIZES.values())
    categories = [c for c in CATEGORIES for _ in range(round(n * SIZES[c] / total))][:n]
    category = dict(enumerate(categories))
    ease = {q: rng.gauss(0, 0.8) for q in category}
    tables = []
    for _ in range(steps):
        table = []
        for q, c in category.items():
            grades = {
                a: float(min(10, max(0, round(MEANS[c, a] + ease[q] + rng.gauss(0, 1.5)))))
                for a in ACTIONS
            }
            table.append((q, grades))
        tables.append(table)
    return tables, category


def replay(tables: list[list], rule: str, order_seed: int) -> dict[int, list[dict]]:
    """Each question's selected steps under ``rule``: the selection as synthesis runs it."""
    usage: Counter = Counter()
    selected: dict[int, list[dict]] = defaultdict(list)
    for t, table in enumerate(tables, 1):
        for q, selection in select_in_order(
            table, usage, rule, THRESHOLD, f"order:{order_seed}:{t}"
        ):
            selected[q].append(asdict(selection))
    return selected


def shares(selected: dict[int, list[dict]], outcome, cfg: RewardsConfig, k: int) -> dict:
    parts = []
    for q, steps in sorted(selected.items()):
        parts += step_rewards(
            [s["score"] for s in steps],
            diversity_bonuses(steps, k, cfg),
            outcome(q, steps),
            cfg,
        )
    out = variance_shares(parts)
    process = [  # the step's process reward alone (the terminal correctness left out)
        {**p, "r_correct": 0.0, "reward": p["r_quality"] + p["r_diversity"]} for p in parts
    ]
    out["d_process"] = variance_shares(process)["r_diversity"]
    out["d_std"] = statistics.pstdev(p["r_diversity"] for p in parts) / (cfg.w_diversity or 1)
    out["q_std"] = statistics.pstdev(p["r_quality"] for p in parts)
    counts = Counter(s["action"] for steps in selected.values() for s in steps)
    n = sum(counts.values())
    out["entropy"] = -sum(v / n * math.log2(v / n) for v in counts.values()) / math.log2(k)
    out["fallback"] = sum(not s["viable"] for st in selected.values() for s in st) / n
    return out


def print_table(title: str, tables: list[list], outcome, k: int, seed: int) -> None:
    print(title)
    print(
        "  rule           diversity       quality  diversity  correct | d of q+d | std(d)  "
        "std(q/10)  selected-entropy  fallback"
    )
    for rule in RULES:
        selected = replay(tables, rule, seed)
        for kind in ("within_state", "running_share"):
            s = shares(selected, outcome, RewardsConfig(diversity=kind), k)
            print(
                f"  {rule:<14} {kind:<14} {s['r_quality']:7.1%} {s['r_diversity']:9.1%} "
                f"{s['r_correct']:8.1%} | {s['d_process']:8.1%} | {s['d_std']:6.3f}  "
                f"{s['q_std']:8.3f}  "
                f"{s['entropy']:16.3f}  {s['fallback']:8.1%}"
            )


def simulated(args: argparse.Namespace) -> None:
    tables, _ = simulated_tables(args.questions, args.steps, args.seed)

    def outcome(q: int, steps: list[dict]) -> float:  # the same dice for every rule
        p = min(0.95, max(0.05, 0.4 + 0.1 * (statistics.fmean(s["score"] for s in steps) - 6)))
        return float(random.Random(f"correct:{args.seed}:{q}").random() < p)

    print_table(
        f"simulated: {len(tables[0])} questions x {args.steps} steps, K = {len(ACTIONS)}, "
        f"threshold {THRESHOLD} (strict), integer grades, seed {args.seed}; defaults "
        "w_q 1, w_d 0.5, w_c 1",
        tables,
        outcome,
        len(ACTIONS),
        args.seed,
    )


def demo(args: argparse.Namespace) -> None:
    """Synthesis on the demo preset, then each rule replayed on its real score tables."""
    import os
    import tempfile

    from spark_core.artifacts import ArtifactStore
    from spark_core.config import load_config
    from spark_core.runtime import configure_prefect_env
    from spark_core.synthesis.rollout import FINAL_SCHEMA, SCORES_SCHEMA

    runs = tempfile.mkdtemp(prefix="spark-bench-")
    cfg = load_config("configs/demo.yaml", [*args.set, f"runtime.runs_dir={runs}"])
    configure_prefect_env(runs)
    os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
    from flows.synthesize import synthesize

    result = synthesize(cfg)
    store = ArtifactStore(cfg.runtime.artifacts_url())
    by_step: dict[int, list] = defaultdict(list)
    for shard in result.shards:
        for row in store.read(shard.scores.name, SCORES_SCHEMA).to_pylist():
            by_step[row["step"]].append(row)
    tables = []
    for t in sorted(by_step):
        grades: dict[int, dict] = defaultdict(dict)
        for row in by_step[t]:
            grades[row["question_id"]][row["action"]] = row["score"]
        tables.append(sorted(grades.items()))
    with_answers = store.read(result.final_answers.name, FINAL_SCHEMA).to_pylist()
    questions = {r["question_id"]: r for r in store.read(result.plan.questions.name).to_pylist()}
    correct = {  # the labels' outcome: a guess earns nothing
        f["question_id"]: float(
            f["answer_source"] != AnswerSource.GUESS
            and f["final_answer"] == questions[f["question_id"]]["answer"]
        )
        for f in with_answers
    }
    global THRESHOLD
    THRESHOLD = cfg.rollout.viable_threshold
    print_table(
        f"demo's labels: {len(tables[0])} questions x {len(tables)} step(s) from "
        f"configs/demo.yaml {' '.join(args.set)} (threshold {THRESHOLD}, {cfg.judge.name} "
        f"judge, judge.grade={cfg.judge.grade}), each rule replayed on the real scores",
        tables,
        lambda q, steps: correct.get(q, 0.0),
        len(cfg.rollout.actions),
        cfg.rollout.seed,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--questions", type=int, default=2500)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--demo", action="store_true", help="also the demo preset's real labels")
    parser.add_argument("--set", action="append", default=[], help="demo overrides")
    args = parser.parse_args()
    simulated(args)
    if args.demo:
        demo(args)


if __name__ == "__main__":
    main()
