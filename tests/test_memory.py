"""Peak memory per stage (spark_core/memory.py): the mark resets between measurements, nested
measurements see each other's peaks, and the stage table carries the figure."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from spark_core.memory import PeakMemory, current_rss_mb, peak_memory

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/clear_refs").exists() or sys.platform != "linux",
    reason="resettable resident high-water mark needs Linux /proc/self/clear_refs",
)
MB = 2**20


def _touch(n_mb: int) -> bytearray:
    block = bytearray(n_mb * MB)
    for i in range(0, len(block), 4096):  # make every page resident
        block[i] = 1
    return block


def test_peak_sees_a_transient_allocation_and_resets_after_it():
    base = current_rss_mb()
    with peak_memory() as first:
        block = _touch(300)
        del block
    assert not first.rss_since_start
    assert first.rss_mb >= base + 280  # freed before the end, still the peak
    with peak_memory() as second:
        pass
    # the mark was reset: the 300 MB block of the first measurement is not in the second
    assert second.rss_mb < first.rss_mb - 200


def test_nested_measurements_fold_into_the_outer_one():
    with peak_memory() as outer:
        with peak_memory() as inner:
            block = _touch(250)
            del block
        with peak_memory() as later:  # resets the mark again: outer must keep inner's peak
            pass
    assert inner.rss_mb >= current_rss_mb() + 200
    assert outer.rss_mb >= inner.rss_mb
    assert later.rss_mb < inner.rss_mb - 150


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
