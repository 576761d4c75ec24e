"""Evaluation memory against the number of adapter policies: peak resident memory while
evaluating 1 adapter policy and while evaluating 5, one after another, in one process, the way
the evaluate stage does (the registry's policy, the judge-free rollout, then the policy is
released). The adapters are random LoRA adapters (r=8, every linear layer, not the identity)
on the run's generator; the difference must stay within one copy of the weights plus 20%.

    python bench/eval_memory.py [--config configs/demo.yaml] [--questions 2] [--merge both]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spark_core.config import load_config  # noqa: E402


def make_adapters(model_path: str, folder: Path, n: int) -> list[str]:
    """``n`` random LoRA adapters for the model at ``model_path``, saved under ``folder``."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    paths = []
    for i in range(n):
        torch.manual_seed(i)
        config = LoraConfig(
            r=8, lora_alpha=16, init_lora_weights=False, target_modules="all-linear"
        )
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(model_path), config)
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.data.mul_(0.01)  # small: a plausible trained delta, not noise
        model.save_pretrained(folder / f"p{i}")
        paths.append(str(folder / f"p{i}"))
        del model
    return paths


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--set", action="append", default=[], help="section.key=value")
    parser.add_argument("--questions", type=int, default=2, help="eval questions per policy")
    parser.add_argument("--merge", choices=("on", "off", "both"), default="both")
    args = parser.parse_args()
    runs = tempfile.mkdtemp(prefix="spark-bench-")
    cfg = load_config(args.config, [*args.set, "evaluation.steps=1", f"runtime.runs_dir={runs}"])

    from spark_core.data.questions import Split, ingest_records
    from spark_core.data.sources import read_source
    from spark_core.evaluation.policy_rollout import evaluate_policy
    from spark_core.memory import current_rss_mb, peak_memory
    from spark_core.models.generator import Generator
    from spark_core.models.hf.default_model import resolve_model
    from spark_core.models.registry import REGISTRY
    from spark_core.models.usage import Usage
    from spark_core.protocol import Question
    from tasks.evaluate import generator_for
    from tasks.tools import sandbox_for

    data = cfg.data
    table = ingest_records(read_source(data.source, data.hub_split, data.hub_revision), data)
    rows = [Question.from_row(r) for r in table.questions.to_pylist() if r["split"] == Split.EVAL]
    rows = rows[: args.questions]
    sandbox = sandbox_for(cfg)
    adapters = make_adapters(resolve_model(cfg.generator.name), Path(runs), 5)
    release = getattr(REGISTRY, "release_policies", lambda: None)  # absent before issue 24

    def evaluate(run_cfg, policy: str, adapter: str | None) -> None:
        source = {"model": run_cfg.section("generator"), "adapter": adapter}
        backend = generator_for(run_cfg, policy, source).backend
        fresh = Generator(backend, None, Usage(run_cfg.generator.name))  # no response cache
        evaluate_policy(run_cfg, policy, rows, fresh, sandbox)
        del backend, fresh
        release()  # what the evaluate-policy task does when a policy is done

    evaluate(cfg, "base", None)  # the base weights, the tokenizer, the sandbox: loaded once
    weights = REGISTRY.weights(*_weights_key(cfg))
    size_mb = sum(p.numel() * p.element_size() for p in weights.parameters()) / 2**20
    print(
        f"evaluation memory, {args.config}: {cfg.generator.name} ({size_mb:.0f} MB of weights), "
        f"{len(rows)} eval questions x 1 step per policy, random LoRA r=8 adapters; "
        f"RSS after loading the base: {current_rss_mb():.0f} MB"
    )
    modes = {"on": [True], "off": [False], "both": [True, False]}[args.merge]
    for merge in modes:
        update = {"merge_adapters": merge}
        run_cfg = cfg.model_copy(update={"evaluation": cfg.evaluation.model_copy(update=update)})
        peaks = {}
        for n in (1, 5):
            start = time.perf_counter()
            with peak_memory() as peak:
                for i in range(n):
                    evaluate(run_cfg, f"p{i}-{n}", adapters[i])
            peaks[n] = peak.rss_mb
            print(
                f"  merge_adapters={str(merge).lower():<5} {n} adapter "
                f"polic{'y' if n == 1 else 'ies'}: peak RSS {peak.rss_mb:7.0f} MB "
                f"({time.perf_counter() - start:.0f} s)"
            )
        diff, limit = peaks[5] - peaks[1], 1.2 * size_mb
        verdict = "met" if diff <= limit else "NOT met"
        print(
            f"    5 - 1 policies: {diff:+.0f} MB = {diff / size_mb:+.2f} copies of the weights "
            f"(limit one copy + 20% = {limit:.0f} MB: {verdict})"
        )


def _weights_key(cfg):
    from spark_core.models.hf.backend import pick_device, pick_dtype
    from spark_core.models.hf.default_model import resolve_model

    device = pick_device(cfg.generator.device)
    return resolve_model(cfg.generator.name), device, pick_dtype(cfg.generator.dtype, device)


if __name__ == "__main__":
    main()
