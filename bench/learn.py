"""Does training move tool choice? Offline PPO on real demo states where one rare action
carries the positive advantage, measured on held-out states with the exact action distribution
(constrained action scoring), before and after, with the KL to the reference.

    python bench/learn.py [--model smollm2-135m-instruct] [--target chemistry]
        [--train-per-category 1] [--negatives 2] [--epochs 3] [--device cpu|cuda]
        [--quantization none|4bit] [--old-logprobs behaviour|refresh] [--clip-eps 0.2]
        [--kl-target T]

Training uses configs/demo.yaml's training section (LoRA r=8, lr 2e-4, batch 4, clip 0.2,
k3 KL penalty 0.05) with pi_old = the behaviour policy, as a pipeline run does: the data is the
base model's (stored log-probs from an hf generator pass, as synthesis writes them), so pi_beta
is re-scored by the trainer's reference pass under the training precision and the stored ones
are the check printed as "stored vs recomputed". --epochs sets the PPO epochs. --device cuda
--quantization 4bit trains QLoRA (needs bitsandbytes). Printed: the ratio range over every
training token before the first optimizer step (the invariant: 1), per step the ratio, clip
fraction, the exact KL(policy || reference) and the k3 penalty at the logged tokens.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--target", default="chemistry")
    parser.add_argument("--train-per-category", type=int, default=1)
    parser.add_argument("--negatives", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--quantization", default="none", choices=["none", "4bit"])
    parser.add_argument("--old-logprobs", default="behaviour", choices=["behaviour", "refresh"])
    parser.add_argument("--clip-eps", type=float, default=0.2)
    parser.add_argument("--learning-rate", type=float, default=None)
    parser.add_argument("--kl-target", type=float, default=None, help="adaptive KL penalty")
    args = parser.parse_args()
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # train on the CPU even where a GPU exists

    from spark_core.config import load_config
    from spark_core.data.questions import validate
    from spark_core.data.sources import read_source
    from spark_core.models.hf.backend import HFBackend
    from spark_core.models.hf.default_model import resolve_model
    from spark_core.training import probe
    from spark_core.training.ppo import train_ppo

    overrides = [
        f"generator.name={args.model}",
        f"training.ppo.epochs={args.epochs}",
        f"training.quantization={args.quantization}",
        f"training.ppo.old_logprobs={args.old_logprobs}",
        f"training.ppo.clip_eps={args.clip_eps}",
        "training.save_steps=100000",
    ]
    if args.kl_target is not None:
        overrides.append(f"training.ppo.kl_target={args.kl_target}")
    if args.learning_rate is not None:
        overrides.append(f"training.learning_rate={args.learning_rate}")
    cfg = load_config("configs/demo.yaml", overrides)
    actions = cfg.rollout.actions
    base = resolve_model(args.model)
    questions = validate(read_source("bundled")).accepted
    train, held_out = probe.split(probe.states(questions, actions), args.train_per_category)
    backend = HFBackend(args.model, args.device, batch_size=8)
    data = probe.with_behaviour(backend, probe.rows(train, actions, args.target, args.negatives))
    before = probe.action_probs(backend, held_out, actions, adapter=None)
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        history = train_ppo(cfg, data, base, Path(out), check_start=True)
        wall = time.perf_counter() - start
        backend.add_adapter("ppo", Path(out) / "adapter")
        after = probe.action_probs(backend, held_out, actions, adapter="ppo")

    p0 = [b[args.target] for b in before]
    p1 = [a[args.target] for a in after]
    gains = [b - a for a, b in zip(p0, p1, strict=True)]
    t, ppo = cfg.training, cfg.training.ppo
    print(
        f"tool-choice probe, {args.model}, device {args.device}, quantization "
        f"{args.quantization}, target {args.target!r}"
    )
    print(
        f"  data: {len(train)} train states x (1 target + {args.negatives} other actions) = "
        f"{len(data)} steps; {len(held_out)} held-out states; {len(actions) + 1} action names"
    )
    print(
        f"  offline PPO: {ppo.epochs} epochs, lr {t.learning_rate}, batch {t.batch_size}, "
        f"LoRA r={t.lora.r}, clip {ppo.clip_eps}, KL penalty {ppo.kl_estimator} x {ppo.kl_coef}"
        f"{f' (adaptive, target {ppo.kl_target})' if ppo.kl_target else ''}, pi_old = "
        f"{ppo.old_logprobs} ({cfg.behaviour_source()}); {len(history)} optimizer steps in "
        f"{wall:.0f} s"
    )
    last = history[-1] if history else {}
    print(
        f"  step-0 ratio range (every training token, before the first optimizer step): "
        f"[{last.get('start_ratio_min', float('nan')):.6f}, "
        f"{last.get('start_ratio_max', float('nan')):.6f}]"
    )
    if "behaviour_gap_mean" in last:
        print(
            f"  stored behaviour log-probs vs recomputed under training numerics: mean "
            f"|diff| {last['behaviour_gap_mean']:.6f}, max {last['behaviour_gap_max']:.6f} nats"
        )
    print(
        f"  rows fitted to max_seq_len {t.max_seq_len}: {last.get('truncated_rows', 0):.0f} "
        f"truncated, {last.get('dropped_rows', 0):.0f} dropped"
    )
    for h in history:
        g = {k: h.get(k, float("nan")) for k in ("loss", "ratio", "ratio_min", "ratio_max")}
        g.update({k: h.get(k, float("nan")) for k in ("clipfrac", "kl_exact", "kl_penalty")})
        beta = f" kl_coef {h.get('kl_coef', float('nan')):.4f}" if ppo.kl_target else ""
        print(
            f"    step {h['step']:3d}: loss {g['loss']:+.4f} ratio {g['ratio']:.3f} "
            f"[{g['ratio_min']:.3f}, {g['ratio_max']:.3f}] clipfrac {g['clipfrac']:.3f} "
            f"kl_exact {g['kl_exact']:.4f} kl_penalty({ppo.kl_estimator}) {g['kl_penalty']:.4f}"
            f"{beta}"
        )
    print(
        f"  held-out P({args.target} | state): before {statistics.fmean(p0):.4f}  after "
        f"{statistics.fmean(p1):.4f}  gain {statistics.fmean(gains):+.4f} "
        f"(min {min(gains):+.4f}, max {max(gains):+.4f})"
    )
    argmax = sum(max(a, key=a.get) == args.target for a in after)
    print(
        f"  held-out states whose most likely action is {args.target!r}: before "
        f"{sum(max(b, key=b.get) == args.target for b in before)}, after {argmax} "
        f"of {len(held_out)}"
    )
    kls = [probe.kl(a, b) for a, b in zip(after, before, strict=True)]
    print(
        f"  KL(after || before) of the held-out action distribution: mean "
        f"{statistics.fmean(kls):.4f} nats; exact per-token KL(policy || reference) on the "
        f"training completions (last step): {last.get('kl_exact', float('nan')):.5f} "
        f"({ppo.kl_estimator} penalty at the logged tokens "
        f"{last.get('kl_penalty', float('nan')):.5f})"
    )
    print(f"  goal +0.2 absolute: {'met' if statistics.fmean(gains) >= 0.2 else 'NOT met'}")


if __name__ == "__main__":
    main()
