"""hf generator throughput: tokens/s at batch 1 and at the batch size the stages use.

    python bench/generate.py [--config configs/demo.yaml] [--new-tokens 48]

The issue asks the stage batch to reach >= 5x the batch-1 figure on 2 cores.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spark_core.config import load_config  # noqa: E402
from spark_core.models.hf.backend import HFBackend  # noqa: E402
from spark_core.models.requests import ChatRequest  # noqa: E402

TOPICS = [
    "the sea",
    "a mountain village",
    "an old clock",
    "a library at night",
    "winter birds",
    "a train journey",
    "the first snow",
    "a lighthouse keeper",
    "a busy market",
    "a quiet garden",
    "a thunderstorm",
    "a chess game",
    "a bakery at dawn",
    "a river delta",
    "a desert road",
    "a city in fog",
]


def tokens_per_s(backend: HFBackend, batch: int, new_tokens: int) -> float:
    requests = [
        ChatRequest.user(
            f"Write a long, detailed story about {TOPICS[i % len(TOPICS)]}.",
            max_new_tokens=new_tokens,
        )
        for i in range(batch)
    ]
    backend.batch_size = batch
    start = time.perf_counter()
    out = backend.generate(requests)
    elapsed = time.perf_counter() - start
    return sum(c.completion_tokens for c in out) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--new-tokens", type=int, default=48)
    args = parser.parse_args()
    cfg = load_config(args.config)
    backend = HFBackend(cfg.generator.name, cfg.generator.device, cfg.generator.dtype)
    tokens_per_s(backend, 2, 8)  # warm
    stage_batch = cfg.generator.batch_size
    one = tokens_per_s(backend, 1, args.new_tokens)
    many = tokens_per_s(backend, stage_batch, args.new_tokens)
    print(
        f"hf generator {cfg.generator.name} on {backend.device}, greedy, "
        f"{args.new_tokens} new tokens"
    )
    print(f"  batch 1:  {one:7.1f} tokens/s")
    print(f"  batch {stage_batch}: {many:7.1f} tokens/s  ({many / one:.1f}x batch 1)")


if __name__ == "__main__":
    main()
