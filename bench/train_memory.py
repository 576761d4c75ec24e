"""Training's peak resident memory with and without its two memory settings: activation
checkpointing (``training.activation_checkpointing``) and the fixed glibc mmap threshold the
trainers set while they train (``spark_core.memory.large_frees_returned``). Each measurement
runs in a fresh process (the high-water mark of a process that has already trained says
nothing), on the demo's training section (LoRA r=8, batch 4) and real states of the bundled
questions, for two optimizer steps (the peak is a step's, not the run's length).

    python bench/train_memory.py [--trainers sft ppo] [--examples 8]
                                 [--settings none checkpointing frees both]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {  # name -> (activation checkpointing, fixed mmap threshold)
    "none": (False, False),
    "checkpointing": (True, False),
    "frees": (False, True),
    "both": (True, True),
}

ONE_RUN = """
import json, sys, tempfile, time
from pathlib import Path
sys.path.insert(0, {root!r})
checkpointing, frees, trainer, examples = {args!r}
import spark_core.memory
from spark_core.memory import current_rss_mb
if not frees:  # the control: the trainers' threshold is not set
    spark_core.memory._glibc = lambda: None
from bench.train import rows
from spark_core.config import load_config
from spark_core.models.hf.default_model import resolve_model
from spark_core.training.registry import TRAINERS

cfg = load_config(
    "configs/demo.yaml",
    ["training.max_steps=2", f"training.activation_checkpointing={{str(checkpointing).lower()}}"],
)
data = rows(examples, ["calculator", "chemistry", "cot"])
base = resolve_model(cfg.generator.name)
before = current_rss_mb()
start = time.perf_counter()
with tempfile.TemporaryDirectory() as out:
    TRAINERS[trainer].train(cfg, data, base, Path(out), None)
seconds = time.perf_counter() - start
hwm = [line for line in open("/proc/self/status") if line.startswith("VmHWM")][0].split()[1]
print(json.dumps({{"before_mb": before, "peak_mb": int(hwm) / 1024, "seconds": seconds}}))
"""


def measure(trainer: str, setting: str, examples: int) -> dict:
    checkpointing, frees = SETTINGS[setting]
    code = ONE_RUN.format(root=str(ROOT), args=(checkpointing, frees, trainer, examples))
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"{trainer}/{setting} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trainers", nargs="+", default=["sft", "ppo"])
    parser.add_argument("--examples", type=int, default=8)
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    args = parser.parse_args()
    print(
        f"training peak RSS, configs/demo.yaml training section, {args.examples} bundled states, "
        "2 optimizer steps, each in a fresh process"
    )
    for trainer in args.trainers:
        for setting in args.settings:
            started = time.perf_counter()
            m = measure(trainer, setting, args.examples)
            print(
                f"  {trainer:4} {setting:14} peak RSS {m['peak_mb'] / 1024:5.2f} GB "
                f"(before training {m['before_mb'] / 1024:.2f} GB; training {m['seconds']:.0f} s, "
                f"process {time.perf_counter() - started:.0f} s)",
                flush=True,
            )


if __name__ == "__main__":
    main()
