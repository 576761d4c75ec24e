"""Peak memory per stage (spark_core/memory.py): the mark resets between measurements, nested
measurements see each other's peaks, and the stage table carries the figure."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from spark_core.memory import PeakMemory

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/clear_refs").exists() or sys.platform != "linux",
    reason="resettable resident high-water mark needs Linux /proc/self/clear_refs",
)
# The resident-memory checks run in a fresh interpreter: inside a multi-GB test process that
# has already allocated and freed gigabytes, a fresh 300 MB block may be served from pages the
# process still holds, so the high-water mark need not move (seen in the full suite).
TOUCH = """
from spark_core.memory import current_rss_mb, peak_memory
MB = 2**20


def touch(n_mb):
    block = bytearray(n_mb * MB)
    for i in range(0, len(block), 4096):  # make every page resident
        block[i] = 1
    return block
"""


def _fresh(body: str) -> str:
    """Run ``body`` (after TOUCH) in a new interpreter; its asserts are the test's. Returns
    what it wrote on stderr."""
    # without glibc's MALLOC_* variables: setting any of them (Dask's nanny sets
    # MALLOC_TRIM_THRESHOLD_ in this process's environment) turns off glibc's dynamic threshold
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    done = subprocess.run(
        [sys.executable, "-c", TOUCH + textwrap.dedent(body)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[1],
        env=env,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stderr


def test_peak_sees_a_transient_allocation_and_resets_after_it():
    _fresh(
        """
        base = current_rss_mb()
        with peak_memory() as first:
            block = touch(300)
            del block
        assert not first.rss_since_start
        assert first.rss_mb >= base + 280, (first.rss_mb, base)  # freed before the end: the peak
        with peak_memory() as second:
            pass
        # the mark was reset: the 300 MB block of the first measurement is not in the second
        assert second.rss_mb < first.rss_mb - 200, (second.rss_mb, first.rss_mb)
        """
    )


def test_nested_measurements_fold_into_the_outer_one():
    _fresh(
        """
        with peak_memory() as outer:
            with peak_memory() as inner:
                block = touch(250)
                del block
            with peak_memory() as later:  # resets the mark again: outer must keep inner's peak
                pass
        assert inner.rss_mb >= current_rss_mb() + 200, (inner.rss_mb, current_rss_mb())
        assert outer.rss_mb >= inner.rss_mb
        assert later.rss_mb < inner.rss_mb - 150, (later.rss_mb, inner.rss_mb)
        """
    )


def test_line_and_columns():
    peak = PeakMemory(2048.0, False, {"cuda:0": (1024.0, 1536.0)})
    assert peak.line() == "peak RSS 2.00 GB; cuda:0 allocated 1.00 GB, reserved 1.50 GB"
    assert peak.to_dict() == {
        "peak_rss_mb": 2048.0,
        "cuda:0_allocated_mb": 1024.0,
        "cuda:0_reserved_mb": 1536.0,
    }
    peak.fold(1000.0, {"cuda:0": (2048.0, 1000.0), "cuda:1": (1.0, 2.0)})
    assert peak.rss_mb == 2048.0
    assert peak.gpu == {"cuda:0": (2048.0, 1536.0), "cuda:1": (1.0, 2.0)}


def test_pipeline_summary_shows_each_stage_and_the_run_peak():
    from flows.summary import StageRow, markdown

    rows = [StageRow("ingest", outcome="ran (1 unit)"), StageRow("train", outcome="ran")]
    rows[0].memory, rows[0].extra["peak"] = "peak RSS 0.50 GB", PeakMemory(512.0)
    rows[1].memory, rows[1].extra["peak"] = "peak RSS 1.50 GB", PeakMemory(1536.0)
    text = markdown(rows, None)
    assert "| peak memory |" in text
    assert "| train | ran | 0.0s |  | — | peak RSS 1.50 GB |" in text
    assert "Peak memory of the run (the largest stage): peak RSS 1.50 GB" in text
    assert rows[1].line() == "train: ran in 0.0s — ; peak RSS 1.50 GB"


MALLOC_STATE = """
import ctypes


class MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
                     "uordblks", "fordblks", "keepcost")
    ]


libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2


def mapped_mb():
    return libc.mallinfo2().hblkhd / MB  # bytes in blocks glibc mapped (returned on free)


def block_after_a_freed_big_one():
    # glibc's default: freeing a mapped 8 MB block raises the mmap threshold to 8 MB, so a
    # 5 MB block then comes from the heap (kept on free) unless the threshold is fixed
    first = bytearray(8 * MB)
    del first
    before = mapped_mb()
    block = bytearray(5 * MB)
    mapped = mapped_mb() - before
    del block
    return mapped, mapped_mb() - before
"""


def test_large_frees_go_back_to_the_system_once_the_threshold_is_fixed():
    _fresh(
        MALLOC_STATE
        + textwrap.dedent(
            """
            from spark_core.memory import large_frees_returned
            with large_frees_returned() as fixed:
                assert fixed
                mapped, left = block_after_a_freed_big_one()
            assert mapped >= 5, mapped  # the 5 MB block was mapped ...
            assert left < 1, left  # ... and unmapped when freed: back to the system
            # after it, glibc's dynamic ceiling (32 MB): a 5 MB block comes from the heap
            # again, where decoding's per-token tensors are cheap
            mapped, _ = block_after_a_freed_big_one()
            assert mapped < 1, mapped
            """
        )
    )


def test_a_spark_process_maps_blocks_above_8_mb_and_training_above_1_mb():
    _fresh(
        MALLOC_STATE
        + textwrap.dedent(
            """
            from spark_core.memory import large_frees_returned, return_large_frees
            assert return_large_frees()
            before = mapped_mb()
            big = bytearray(12 * MB)
            assert mapped_mb() - before >= 12  # above the process's 8 MB: mapped
            del big
            mapped, _ = block_after_a_freed_big_one()
            assert mapped < 1, mapped  # a 5 MB block (a KV cache's size) stays on the heap
            with large_frees_returned():
                mapped, left = block_after_a_freed_big_one()
            assert mapped >= 5 and left < 1, (mapped, left)  # training: mapped, returned
            mapped, _ = block_after_a_freed_big_one()
            assert mapped < 1, mapped  # the process's 8 MB again
            """
        )
    )


def test_without_a_fixed_threshold_the_heap_keeps_the_freed_blocks():
    """The positive control of the test above: the same allocations, glibc's default."""
    _fresh(
        MALLOC_STATE
        + textwrap.dedent(
            """
            mapped, _ = block_after_a_freed_big_one()
            assert mapped < 1, mapped  # from the heap, which keeps it when freed
            """
        )
    )


FREED_IN_THE_MIDDLE = """
from spark_core.memory import current_rss_mb, trim_heap
big = bytearray(8 * MB)
del big  # glibc raises its threshold to 8 MB: the 4 MB blocks below come from the heap
blocks, pins = [], []
for _ in range(50):  # a small block after each: the freed ones cannot merge into the top
    blocks.append(touch(4))
    pins.append(bytearray(64 * 1024))
del blocks
before = current_rss_mb()
"""


def test_trim_heap_gives_back_what_the_heap_kept():
    _fresh(
        FREED_IN_THE_MIDDLE
        + textwrap.dedent(
            """
            assert trim_heap()
            assert current_rss_mb() < before - 150, (current_rss_mb(), before)
            """
        )
    )


def test_without_trim_heap_the_freed_blocks_stay_resident():
    """The positive control of the test above."""
    _fresh(
        FREED_IN_THE_MIDDLE
        + textwrap.dedent(
            """
            import time
            time.sleep(0.2)
            assert current_rss_mb() > before - 20, (current_rss_mb(), before)
            """
        )
    )


THREADS_ALLOCATE = """
import ctypes, ctypes.util, os, sys, threading
libc = ctypes.CDLL(ctypes.util.find_library("c"))


def work():
    for _ in range(20):
        touch(1)  # malloc'd (above pymalloc's sizes), from this thread's arena


threads = [threading.Thread(target=work) for _ in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
sys.stderr.flush()
libc.malloc_stats()  # one "Arena N:" block per arena, on stderr
"""


def _arenas(body: str) -> int:
    return _fresh(body + THREADS_ALLOCATE).count("Arena ")


def test_a_spark_process_keeps_every_thread_on_one_heap():
    assert _arenas("from spark_core.memory import return_large_frees\nreturn_large_frees()") == 1
    assert _arenas("") > 1  # the positive control: glibc gives the threads arenas of their own
