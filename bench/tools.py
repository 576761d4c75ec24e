"""Tool latency through the sandbox versus a fresh Python interpreter per call.

Prints, per tool, the median and p95 latency per call through the pre-forked sandbox (under
bubblewrap by default), and — as the baseline, measured in the same process — the median of
starting a new interpreter that imports the tool and runs the same call (cold, and without
bubblewrap, so the baseline is if anything flattered). The target is >= 10x for every tool.

    python bench/tools.py [--calls 30] [--baseline-calls 5] [--isolation bwrap|process]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

from spark_core.tools.base import ToolStatus
from spark_core.tools.registry import discover
from spark_core.tools.sandbox import Sandbox, SandboxLimits, scrubbed_env

INPUTS = {
    "calculator": "sqrt(2) * (3 + 4)**2 / 7",
    "python": "print(sum(i * i for i in range(1000)))",
    "symbolic_math": "solve: x^2 - 5x + 6 = 0",
    "unit_converter": "5 km/h to m/s",
    "chemistry": "Ca(OH)2",
    "statistics": "binom.cdf(3, n=10, p=0.5)",
    "finance": "npv(0.08, [-1000, 300, 400, 500])",
    "knowledge_search": "Hardy-Weinberg heterozygote frequency",
}
FRESH = (
    "import sys\n"
    "from spark_core.tools.registry import get_tool\n"
    "tool = get_tool(sys.argv[1])\n"
    "if tool.prepare: tool.prepare({})\n"
    "print(tool.run(sys.argv[2]))\n"
)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def fresh_interpreter_ms(tool: str, text: str, calls: int) -> float:
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-c", FRESH, tool, text],
            check=True,
            capture_output=True,
            env=scrubbed_env(),
        )
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--baseline-calls", type=int, default=5)
    parser.add_argument("--isolation", choices=["bwrap", "process"], default="bwrap")
    args = parser.parse_args()

    start = time.perf_counter()
    sandbox = Sandbox(SandboxLimits(isolation=args.isolation), workers=1)
    print(
        f"isolation {args.isolation}; sandbox worker start-up: "
        f"{time.perf_counter() - start:.2f} s (once per process)"
    )
    ratios = []
    print(f"{'tool':<18}{'median ms':>11}{'p95 ms':>9}{'fresh ms':>10}{'speed-up':>10}")
    for name in discover():
        text = INPUTS[name]
        sandbox.run(name, text)  # warm
        times = []
        for _ in range(args.calls):
            t0 = time.perf_counter()
            result = sandbox.run(name, text)
            times.append((time.perf_counter() - t0) * 1000)
            assert result.status == ToolStatus.OK, (name, result)
        median = statistics.median(times)
        fresh = fresh_interpreter_ms(name, text, args.baseline_calls)
        ratios.append(fresh / median)
        print(
            f"{name:<18}{median:>11.1f}{percentile(times, 0.95):>9.1f}{fresh:>10.0f}"
            f"{fresh / median:>9.1f}x"
        )
    sandbox.close()
    print(f"smallest speed-up: {min(ratios):.1f}x (target >= 10x)")


if __name__ == "__main__":
    main()
