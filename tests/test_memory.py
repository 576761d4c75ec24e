"""Peak memory per stage (spark_core/memory.py): the mark resets between measurements, nested
measurements see each other's peaks, and the stage table carries the figure."""

from __future__ import annotations

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


def _fresh(body: str) -> None:
    """Run ``body`` (after TOUCH) in a new interpreter; its asserts are the test's."""
    done = subprocess.run(
        [sys.executable, "-c", TOUCH + textwrap.dedent(body)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert done.returncode == 0, done.stderr[-2000:]


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


FRAGMENT = """
from spark_core.memory import return_large_frees
import gc
def churn():
    # glibc maps the first big block; freeing it raises its threshold, so the next ones come
    # from the heap, each pinned in place by a small block allocated after it
    first = touch(8)
    del first
    blocks, pins = [], []
    for _ in range(40):
        blocks.append(touch(5))
        pins.append(bytearray(1000))
    before = current_rss_mb()
    del blocks
    gc.collect()
    return before - current_rss_mb()  # MB handed back when the big blocks were freed
"""


def test_large_frees_go_back_to_the_system_once_the_threshold_is_fixed():
    _fresh(
        FRAGMENT
        + textwrap.dedent(
            """
        assert return_large_frees()
        returned = churn()
        assert returned > 150, returned  # 200 MB of 5 MB blocks freed: nearly all handed back
        """
        )
    )


def test_without_a_fixed_threshold_the_heap_keeps_the_freed_blocks():
    """The positive control of the test above: the same churn, glibc's default."""
    _fresh(
        FRAGMENT
        + textwrap.dedent(
            """
        returned = churn()
        assert returned < 50, returned
        """
        )
    )
