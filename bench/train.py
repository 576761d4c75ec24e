"""Training throughput: tokens/s of the offline PPO step, the SFT step and the DPO step on the
same states, and their ratios to SFT (the issue asks PPO <= 1.6x the SFT step's cost: one
extra forward pass without gradient).

    python bench/train.py [--examples 16] [--model smollm2-135m-instruct]
                          [--quantization auto|none|4bit]

``auto`` (the default, as in the presets) trains LoRA on CPU and QLoRA where CUDA and
bitsandbytes are present; the first line says which one ran.

Both trainers run one epoch over the same examples with the same batch size and LoRA config.
PPO runs as configured (``training.ppo.old_logprobs: behaviour``, the hf generator: pi_beta from
the reference pass): its time includes the reference pass (adapter disabled, no gradient) of
every micro-batch, which is also pi_old; the stored behaviour log-probs (computed here, outside
the timing, as the select barrier does) are only checked against it. DPO trains one pair per
state (chosen: the same completion SFT imitates; rejected: a short ``cot`` step, judged lower),
so it reads a second sequence per state and runs the reference (adapter disabled) on both;
its rate counts the same tokens as SFT's, so the ratio is the cost per state.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spark_core.config import load_config  # noqa: E402
from spark_core.data.questions import validate  # noqa: E402
from spark_core.data.sources import read_source  # noqa: E402
from spark_core.models.hf.backend import HFBackend, load_tokenizer  # noqa: E402
from spark_core.models.hf.default_model import resolve_model  # noqa: E402
from spark_core.protocol import (  # noqa: E402
    render_step,
    state_message,
    system_prompt,
    tool_lines,  # noqa: E402
)
from spark_core.training.behaviour import completion_logprobs  # noqa: E402
from spark_core.training.data import ppo_examples  # noqa: E402
from spark_core.training.dpo import train_dpo  # noqa: E402
from spark_core.training.hardware import choose_precision  # noqa: E402
from spark_core.training.ppo import train_ppo  # noqa: E402
from spark_core.training.sft import train_sft  # noqa: E402


def rows(n: int, actions: list[str]) -> list[dict]:
    questions = validate(read_source("bundled")).accepted[:n]
    system = system_prompt(tool_lines(actions))
    return [
        {
            "system": system,
            "prompt": state_message(q["question"], q["options"], ""),
            "completion": render_step("Compute it directly.", "calculator", "12000 / 20"),
            "advantage": 1.0 if i % 2 else -1.0,
        }
        for i, q in enumerate(questions)
    ]


def pool(data: list[dict]) -> list[dict]:
    """A candidate pool of two judged candidates per state: one DPO pair each."""
    rejected = render_step("Guess.", "cot", "A")
    return [
        {
            "question_id": i,
            "step": 0,
            "system": r["system"],
            "prompt": r["prompt"],
            "completion": completion,
            "action": action,
            "judge_score": score,
            "selected": selected,
        }
        for i, r in enumerate(data)
        for completion, action, score, selected in (
            (r["completion"], "calculator", 8.0, True),
            (rejected, "cot", 2.0, False),
        )
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--examples", type=int, default=16)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--quantization", default="auto", choices=["auto", "none", "4bit"])
    args = parser.parse_args()
    cfg = load_config(
        "configs/demo.yaml",
        [
            f"generator.name={args.model}",
            "training.sft.epochs=1",
            "training.ppo.epochs=1",
            "training.dpo.epochs=1",
            "training.save_steps=100000",
            f"training.quantization={args.quantization}",
        ],
    )
    precision = choose_precision(cfg.training)
    base = resolve_model(args.model)
    data = rows(args.examples, cfg.rollout.actions)
    behaviour = completion_logprobs(
        HFBackend(args.model, "cpu"), [(r["system"], r["prompt"], r["completion"]) for r in data]
    )
    data = [{**r, "behaviour_logprobs": b} for r, b in zip(data, behaviour, strict=True)]
    examples, _ = ppo_examples(data, load_tokenizer(base), cfg.training.max_seq_len)
    tokens = sum(len(e["input_ids"]) for e in examples)
    rates = {}
    for name, fn in (("sft", train_sft), ("ppo", train_ppo)):
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            fn(cfg, data, base, Path(out))
            rates[name] = tokens / (time.perf_counter() - start)
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        train_dpo(cfg, pool(data), base, Path(out))
        rates["dpo"] = tokens / (time.perf_counter() - start)
    print(
        f"training throughput, {args.model}, {args.examples} examples "
        f"({tokens} tokens), batch {cfg.training.batch_size}, LoRA r={cfg.training.lora.r}, "
        f"{precision.device}, quantization {precision.quantization}, "
        f"pi_old={cfg.training.ppo.old_logprobs}"
    )
    print(f"  SFT step: {rates['sft']:7.1f} tokens/s")
    print(f"  PPO step: {rates['ppo']:7.1f} tokens/s")
    print(f"  DPO step: {rates['dpo']:7.1f} tokens/s (per state: 1 pair, chosen tokens counted)")
    print(f"  PPO costs {rates['sft'] / rates['ppo']:.2f}x the SFT step")
    print(f"  DPO costs {rates['sft'] / rates['dpo']:.2f}x the SFT step")


if __name__ == "__main__":
    main()
