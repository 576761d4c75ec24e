"""Evaluation cost on the demo eval split (judge-free rollouts, fresh response caches, so every
generation is real):

1. constrained action decoding (thought -> scored action -> input, the default) against free
   decoding (the model writes the whole step), both greedy on the base model — the ratio must
   stay at most 1.3x;
2. the base@T sampling baseline (constrained, sampled), the cost it adds to the demo;
3. with ``--adapters`` (after ``spark train --config configs/demo.yaml``): the sft and ppo
   adapters with LoRA kept separate (switched on the shared base) versus merged into a copy of
   the base weights (``evaluation.merge_adapters``, the default).

    python bench/evaluate.py [--config configs/demo.yaml] [--repeats 2] [--adapters]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spark_core.config import load_config  # noqa: E402
from spark_core.evaluation.policies import sampled_name  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--set", action="append", default=[], help="section.key=value")
    parser.add_argument("--repeats", type=int, default=2, help="alternating runs per mode")
    parser.add_argument("--adapters", action="store_true", help="also time the demo adapters")
    args = parser.parse_args()
    cfg = load_config(args.config, args.set)
    from spark_core.data.questions import Split, ingest_records
    from spark_core.data.sources import read_source
    from spark_core.evaluation.policy_rollout import evaluate_policy
    from spark_core.models.generator import Generator
    from spark_core.models.response_cache import ResponseCache
    from spark_core.models.usage import Usage
    from spark_core.protocol import Question
    from tasks.evaluate import generator_for, policy_source
    from tasks.tools import sandbox_for

    data = cfg.data
    table = ingest_records(read_source(data.source, data.hub_split, data.hub_revision), data)
    rows = [Question.from_row(r) for r in table.questions.to_pylist() if r["split"] == Split.EVAL]
    sandbox = sandbox_for(cfg)

    def run(
        run_cfg, policy: str, paths: dict | None = None, questions: list | None = None
    ) -> tuple[float, object, Usage]:
        with tempfile.TemporaryDirectory() as tmp:
            cache = ResponseCache(Path(tmp) / "responses.sqlite")
            generator = generator_for(run_cfg, policy, policy_source(run_cfg, policy, paths or {}))
            usage = Usage(cfg.generator.name)
            fresh = Generator(generator.backend, cache, usage)
            start = time.perf_counter()
            result = evaluate_policy(run_cfg, policy, questions or rows, fresh, sandbox)
            return time.perf_counter() - start, result, usage

    def mode(decoding: str):
        update = {"action_decoding": decoding}
        return cfg.model_copy(update={"evaluation": cfg.evaluation.model_copy(update=update)})

    print(
        f"evaluation, {args.config}: {len(rows)} eval questions, up to {cfg.evaluation.steps} "
        f"steps, {cfg.rollout.thought_tokens}+{cfg.rollout.input_tokens} tokens per step, "
        f"{cfg.generator.name} on {cfg.generator.device}"
    )
    for decoding in ("free", "constrained"):  # warm-up: model load, first-call overheads
        run(mode(decoding), "base", questions=rows[:2])
    seconds: dict[str, list[float]] = {"free": [], "constrained": []}
    for _ in range(args.repeats):  # alternate, so drift on a shared machine hits both
        for decoding in ("free", "constrained"):
            elapsed, result, usage = run(mode(decoding), "base")
            seconds[decoding].append(elapsed)
            invalid = sum(result.column("invalid_actions").to_pylist())
            steps = sum(result.column("steps").to_pylist())
            print(
                f"  base   {decoding:<11} {elapsed:6.1f} s  {len(rows) / elapsed:6.3f} "
                f"questions/s  {steps} steps ({elapsed / steps:.1f} s/step), {invalid} invalid, "
                f"{usage.completion_tokens} generated tokens"
            )
    free, constrained = (statistics.mean(seconds[k]) for k in ("free", "constrained"))
    print(f"  constrained / free decoding time: {constrained / free:.2f}x (limit 1.3x)")
    t = cfg.evaluation.temperatures[0]
    elapsed, _, _ = run(mode("constrained"), sampled_name(t))
    print(
        f"  {sampled_name(t)} (constrained) {elapsed:6.1f} s: the sampling baseline adds "
        f"{elapsed / constrained:.2f}x one greedy policy's evaluation time"
    )
    if args.adapters:
        _adapters(cfg, run)


def _adapters(cfg, run) -> None:
    from spark_core.runtime import configure_prefect_env

    configure_prefect_env(cfg.runtime.runs_dir)
    from flows.train import train

    adapters = train(cfg)  # cached when the demo run has trained already
    paths = {p: adapters[p]["adapter"] for p in ("sft", "ppo")}
    separate = cfg.model_copy(
        update={"evaluation": cfg.evaluation.model_copy(update={"merge_adapters": False})}
    )
    for policy in ("sft", "ppo"):
        lora, _, _ = run(separate, policy, paths)
        merged, result, _ = run(cfg, policy, paths)
        acc = sum(result.column("correct").to_pylist()) / result.num_rows
        print(
            f"  {policy:<6} LoRA separate {lora:6.1f} s, merged {merged:6.1f} s "
            f"({lora / merged:.2f}x; accuracy {acc:.0%})"
        )


if __name__ == "__main__":
    main()
