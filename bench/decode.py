"""One decoding step of the demo model, transformers' concatenating KV cache against the cache
that grows in place (``spark_core/models/hf/growing_cache.py``), and against rows that read the
state in place (``spark_core/models/hf/shared_prefix.py``), in one process.

Each batch size reads a ~420-token state once (a synthesis step's prompt), repeats its cache for
every row and decodes ``--steps`` greedy tokens on it, both ways; then decodes the same rows on
the one copy of the state. Prints the time per step, the ratios, whether every logit was equal
(the two caches) and the largest logit difference (the shared prefix: another summation order).
With ``--profile`` it also prints torch's operator table for the concatenating cache and for
the shared prefix (where a step's time goes).

    python bench/decode.py [--batch 1 16 32] [--context 420] [--steps 16] [--profile]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 16, 32])
    parser.add_argument("--context", type=int, default=420)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()

    from spark_core.memory import return_large_frees

    return_large_frees()  # as in every spark process
    import torch
    from transformers import AutoModelForCausalLM

    from spark_core.models.hf import shared_prefix
    from spark_core.models.hf.default_model import DEFAULT_MODEL, resolve_model
    from spark_core.models.hf.prefix_cache import cache_arg, growing_cache, new_cache
    from spark_core.models.hf.shared_prefix import SharedPrefix

    model = AutoModelForCausalLM.from_pretrained(resolve_model(DEFAULT_MODEL), dtype=torch.float32)
    model.eval()
    arg = cache_arg(model)
    prompt = torch.randint(0, 10_000, (1, args.context), generator=torch.Generator().manual_seed(0))

    @torch.inference_mode()
    def decode(rows: int, grow: bool) -> tuple[float, torch.Tensor]:
        out = model(
            input_ids=prompt, use_cache=True, logits_to_keep=1, **(new_cache(model) if grow else {})
        )
        cache = getattr(out, arg)
        cache.batch_repeat_interleave(rows)
        ids = (torch.arange(rows) + 100)[:, None]
        logits = []
        start = time.perf_counter()
        for _ in range(args.steps):
            out = model(input_ids=ids, use_cache=True, **{arg: cache})
            cache = getattr(out, arg)
            logits.append(out.logits[:, -1])
            ids = logits[-1].argmax(-1)[:, None]
        return (time.perf_counter() - start) / args.steps, torch.stack(logits)

    @torch.inference_mode()
    def decode_shared(rows: int) -> tuple[float, torch.Tensor]:
        out = model(input_ids=prompt, use_cache=True, logits_to_keep=1, **new_cache(model))
        state = SharedPrefix.whole(getattr(out, arg), rows)
        cache, mask = growing_cache(model), torch.zeros(rows, 0, dtype=torch.long)
        ids = (torch.arange(rows) + 100)[:, None]
        logits = []
        start = time.perf_counter()
        for step in range(args.steps):
            mask = torch.cat([mask, torch.ones(rows, 1, dtype=torch.long)], dim=1)
            out = shared_prefix.forward(
                model,
                state,
                input_ids=ids,
                attention_mask=mask,
                position_ids=torch.full((rows, 1), args.context + step),
                use_cache=True,
                **{arg: cache},
            )
            cache = getattr(out, arg)
            logits.append(out.logits[:, -1])
            ids = logits[-1].argmax(-1)[:, None]
        return (time.perf_counter() - start) / args.steps, torch.stack(logits)

    print(
        f"decoding step, {DEFAULT_MODEL} (fp32, CPU, {torch.get_num_threads()} threads), "
        f"{args.context}-token state, {args.steps} steps"
    )
    for rows in args.batch:
        decode(rows, False)  # warm-up
        concat, a = decode(rows, False)
        grown, b = decode(rows, True)
        shared, c = decode_shared(rows)
        print(
            f"  batch {rows:3d}: concatenating {1000 * concat:7.1f} ms  growing "
            f"{1000 * grown:7.1f} ms  ratio {grown / concat:.2f}x  "
            f"logits equal: {torch.equal(a, b)}"
        )
        print(
            f"             shared prefix {1000 * shared:7.1f} ms  ratio to growing "
            f"{shared / grown:.2f}x  largest logit difference {(c - b).abs().max():.1e}"
        )
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        rows = max(args.batch)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            decode(rows, False)
        print(f"  operators, concatenating cache, batch {rows}:")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=6))
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            decode_shared(rows)
        print(f"  operators, shared prefix, batch {rows}:")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=6))


if __name__ == "__main__":
    main()
