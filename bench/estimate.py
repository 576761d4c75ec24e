"""The dry run's time estimate against the measured run, stage by stage, and each stage's
peak memory: calibrate and estimate (what ``spark run --dry-run`` prints), then run the
pipeline in the same process against a fresh run folder and response cache.

    python bench/estimate.py [--config configs/demo.yaml] [--set ...]
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import fresh_run  # noqa: E402
from bench.pipeline import STAGES, _runs_since  # noqa: E402


def main() -> None:
    cfg, args = fresh_run()

    from flows.cli_estimate import calibrated_estimate
    from flows.pipeline import pipeline
    from spark_core.memory import peak_memory, return_large_frees
    from tasks.memory import LAST

    return_large_frees()  # as the `spark` command does, before the calibration loads models
    start = time.perf_counter()
    with peak_memory() as calibration_peak:
        rates, stages = calibrated_estimate(cfg)
    calibration = time.perf_counter() - start
    estimated = {s.stage: s.seconds for s in stages}
    print(f"  calibration: {calibration:.1f} s ({calibration_peak.line()}); {rates.to_dict()}")
    print("  estimated: " + ", ".join(f"{k} {v:.1f} s" for k, v in estimated.items()), flush=True)

    started = time.time()
    start = time.perf_counter()
    pipeline(cfg)
    total = time.perf_counter() - start
    measured, _ = asyncio.run(_runs_since(started))

    print(f"time estimate, {args.config} {' '.join(args.set)}")
    print(f"  {'stage':<12}{'estimated':>11}{'measured':>11}{'ratio':>8}   peak memory")
    for stage in STAGES:
        est, got = estimated[stage], measured.get(stage, 0.0)
        ratio = f"{est / got:.2f}" if got else "–"
        peak = LAST[stage].line() if stage in LAST else "–"
        print(f"  {stage:<12}{est:>9.1f} s{got:>9.1f} s{ratio:>8}   {peak}")
    est_total = sum(estimated.values())
    print(f"  {'total':<12}{est_total:>9.1f} s{total:>9.1f} s{est_total / total:>8.2f}")


if __name__ == "__main__":
    main()
