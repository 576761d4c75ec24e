"""Peak memory of a stretch of work (a stage): the process's resident set on CPU, and what
torch allocated and reserved on each CUDA device.

A user should learn that a run will not fit from the stage summary, not from the OOM killer.
Linux keeps a resident high-water mark per process (``VmHWM``) that can be reset by writing
``5`` to ``/proc/self/clear_refs``; measurements may nest (the evaluate flow runs train when
it has no adapters): before any reset the current marks are folded into every open
measurement, so an outer one still sees the inner one's peak. Where the mark cannot be reset
(not Linux), the process's lifetime peak (``ru_maxrss``) is reported and marked as such.
Only this process is measured: the sandbox's worker processes are not (tools are small).

``return_large_frees`` and ``large_frees_returned`` bound what glibc keeps: see their
docstrings.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import resource
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")
_LOCK = threading.Lock()
_OPEN: list[PeakMemory] = []


@dataclass
class PeakMemory:
    """Peaks seen while a measurement was open. ``rss_mb``: process resident set;
    ``gpu``: per CUDA device, (max allocated, max reserved) in MB."""

    rss_mb: float = 0.0
    rss_since_start: bool = False  # the mark could not be reset: the process's lifetime peak
    gpu: dict[str, tuple[float, float]] = field(default_factory=dict)

    def fold(self, rss_mb: float, gpu: dict[str, tuple[float, float]]) -> None:
        self.rss_mb = max(self.rss_mb, rss_mb)
        for device, (allocated, reserved) in gpu.items():
            a, r = self.gpu.get(device, (0.0, 0.0))
            self.gpu[device] = (max(a, allocated), max(r, reserved))

    def line(self) -> str:
        """'peak RSS 1.23 GB; cuda:0 allocated 10.1 GB, reserved 12.0 GB'."""
        rss = f"peak RSS {self.rss_mb / 1024:.2f} GB" + (
            " (process lifetime)" if self.rss_since_start else ""
        )
        gpu = [
            f"{d} allocated {a / 1024:.2f} GB, reserved {r / 1024:.2f} GB"
            for d, (a, r) in sorted(self.gpu.items())
        ]
        return "; ".join([rss, *gpu])

    def to_dict(self) -> dict[str, float]:
        """Flat columns for summaries: rss_mb, and gpu_allocated_mb / gpu_reserved_mb per
        device ('cuda:0_allocated_mb')."""
        out = {"peak_rss_mb": round(self.rss_mb, 1)}
        for device, (a, r) in sorted(self.gpu.items()):
            out[f"{device}_allocated_mb"] = round(a, 1)
            out[f"{device}_reserved_mb"] = round(r, 1)
        return out


# bytes: allocations above a fixed mmap threshold are mapped, and unmapped when freed
MMAP_THRESHOLD = 1 << 20  # while training
PROCESS_MMAP_THRESHOLD = 8 << 20  # everywhere else in a `spark` process: see return_large_frees
# what glibc's dynamic thresholds reach on a 64-bit machine, restored after training
_DYNAMIC_MMAP_MAX, _DYNAMIC_TRIM_MAX = 32 << 20, 64 << 20
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8  # mallopt's (malloc.h)
# one heap for every thread of a `spark` process: see return_large_frees
PROCESS_ARENAS = 1
# process-wide, as the thresholds are: the process's own threshold, a training one open
_STATE: dict[str, Any] = {"process": None, "open": False}


@functools.cache
def _load_glibc() -> Any | None:
    """glibc's C library, or None (not Linux, or musl); looked up once (``find_library``
    runs ``ldconfig``)."""
    name = ctypes.util.find_library("c") if sys.platform.startswith("linux") else None
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "mallopt") else None


def _glibc() -> Any | None:
    """glibc, unless its own ``MALLOC_MMAP_THRESHOLD_`` is set (it wins: nothing is changed)."""
    return None if "MALLOC_MMAP_THRESHOLD_" in os.environ else _load_glibc()


def return_large_frees(threshold: int = PROCESS_MMAP_THRESHOLD) -> bool:
    """Fix glibc's mmap threshold for the rest of the process (every `spark` command and stage
    flow calls it once); False where this is not glibc.

    glibc's dynamic threshold rises to the largest block freed (up to 32 MB), and the heap
    below it fragments and stays resident. Fixed at 8 MB, the demo's synthesis held 1.67 GB
    at its peak against 2.61 GB, for 4% more time (117.0 s against 112.5 s,
    ``bench/synthesize.py`` under ``MALLOC_MMAP_THRESHOLD_``): a decoding step's KV caches
    and logits (a few MB each at batch 16) stay on the fast heap. Lower thresholds map those
    too, and pay page faults at every token: 4 MB cost 22%, 1 MB 150% (synthesis 277 s).
    Training sets 1 MB while it runs (``large_frees_returned``).

    It also keeps every thread on one heap (``M_ARENA_MAX``, unless ``MALLOC_ARENA_MAX`` is
    set): glibc gives each thread that contends for the heap an arena of its own, and each
    arena keeps what it freed. The demo's parallel shards held ~0.3 GB more that way while
    generating; their forward passes take turns on the model anyway (one compute lock)."""
    libc = _glibc()
    if libc is None:
        return False
    with _LOCK:
        if _STATE["process"] is None and libc.mallopt(_M_MMAP_THRESHOLD, threshold):
            _STATE["process"] = threshold
            if "MALLOC_ARENA_MAX" not in os.environ:
                libc.mallopt(_M_ARENA_MAX, PROCESS_ARENAS)
    return _STATE["process"] is not None


def trim_heap() -> bool:
    """Give the heap's free pages back to the system (glibc's ``malloc_trim``: every arena,
    not only its top). A stage starts with it: what the previous stage freed is otherwise
    still resident and counts in this stage's peak (the demo's train stage peaked 0.44 GB
    higher over synthesis's leftovers). Whether any was given back (False: none, or not glibc)."""
    libc = _glibc()
    return bool(libc is not None and libc.malloc_trim(0))


@contextmanager
def large_frees_returned(threshold: int = MMAP_THRESHOLD) -> Iterator[bool]:
    """While open, glibc hands blocks above ``threshold`` back to the system as soon as they
    are freed; yields whether it could (False where this is not glibc).

    For training, not generation. glibc raises its mmap threshold to the size of each mapped
    block freed (up to 32 MB), so after the first layer of a forward and backward pass the
    multi-MB activations of later ones come from the heap, which fragments and never shrinks:
    a 135M-parameter LoRA step on 4 x 300 tokens (checkpointed) peaked at 2.67 GB resident
    against 1.41 GB with a fixed 1 MB threshold (same arithmetic, same results;
    docs/benchmarks.md, bench/train_memory.py). Decoding is the opposite case: its KV caches
    and logits are allocated and freed at every token, and mapping each one costs page faults
    (the demo's synthesis took 277 s with it against 127 s without, generation 3.7x slower).
    On exit the process's threshold is back (``return_large_frees``; where none was set, what
    glibc's dynamic ones reach: 32 MB mmap, 64 MB trim) and the heap is trimmed. Nested use
    keeps the outermost. ``MALLOC_MMAP_THRESHOLD_`` in the environment (glibc's own
    variable) wins: nothing is changed."""
    libc = _glibc()
    with _LOCK:
        outer = libc is not None and not _STATE["open"]
        _STATE["open"] = _STATE["open"] or outer
    if not outer:
        yield libc is not None
        return
    trim_heap()  # what was freed before training: not part of its peak
    try:
        yield bool(libc.mallopt(_M_MMAP_THRESHOLD, threshold))
    finally:
        _STATE["open"] = False
        if _STATE["process"] is not None:  # back to the process's own threshold
            libc.mallopt(_M_MMAP_THRESHOLD, _STATE["process"])
        else:  # mallopt cannot turn glibc's dynamic thresholds back on: where they end up
            libc.mallopt(_M_MMAP_THRESHOLD, _DYNAMIC_MMAP_MAX)
            libc.mallopt(_M_TRIM_THRESHOLD, _DYNAMIC_TRIM_MAX)
        trim_heap()


def current_rss_mb() -> float:
    """The process's resident set now (MB)."""
    return _status_mb("VmRSS") or 0.0


def _status_mb(key: str) -> float | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return None


def _rss_peak() -> tuple[float, bool]:
    """(peak MB since the last reset, whether it is the lifetime peak instead)."""
    hwm = _status_mb("VmHWM")
    if hwm is not None:
        return hwm, False
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, kB elsewhere
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20, True


def _reset_rss_peak() -> bool:
    try:
        _CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


def _cuda() -> object | None:
    """torch.cuda when torch is loaded and CUDA is in use (never imports torch itself)."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return None
    return torch.cuda


def _gpu_peaks() -> dict[str, tuple[float, float]]:
    cuda = _cuda()
    if cuda is None:
        return {}
    return {
        f"cuda:{i}": (cuda.max_memory_allocated(i) / 2**20, cuda.max_memory_reserved(i) / 2**20)
        for i in range(cuda.device_count())
    }


def _checkpoint_and_reset() -> bool:
    """Fold the current marks into every open measurement, then reset them."""
    rss, _ = _rss_peak()
    gpu = _gpu_peaks()
    for open_one in _OPEN:
        open_one.fold(rss, gpu)
    cuda = _cuda()
    if cuda is not None:
        for i in range(cuda.device_count()):
            cuda.reset_peak_memory_stats(i)
    return _reset_rss_peak()


@contextmanager
def peak_memory() -> Iterator[PeakMemory]:
    """Measure the peaks of the body; the yielded object is filled in when the body ends
    (also when it raises)."""
    peak = PeakMemory()
    with _LOCK:
        peak.rss_since_start = not _checkpoint_and_reset()
        _OPEN.append(peak)
    try:
        yield peak
    finally:
        with _LOCK:
            rss, _ = _rss_peak()
            peak.fold(rss, _gpu_peaks())
            for open_one in _OPEN:  # the outer measurements saw this peak too
                open_one.fold(rss, _gpu_peaks())
            _OPEN.remove(peak)
