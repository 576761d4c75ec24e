"""Shared fixtures: Prefect's test harness, the shared MMLU-Pro data, small helpers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MMLU_PRO_TEST = SHARED_DATA / "mmlu_pro_test.parquet"


@pytest.fixture(scope="session")
def mmlu_pro_test() -> Path:
    if not MMLU_PRO_TEST.is_file():
        pytest.skip(
            f"{MMLU_PRO_TEST} is absent (the shared MMLU-Pro test split sits beside the checkout)"
        )
    return MMLU_PRO_TEST


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory):
    """One temporary Prefect server + database for the whole session (starting one is slow)."""
    from prefect.settings import PREFECT_RESULTS_LOCAL_STORAGE_PATH, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    storage = tmp_path_factory.mktemp("prefect-results")
    with prefect_test_harness(server_startup_timeout=120):
        with temporary_settings({PREFECT_RESULTS_LOCAL_STORAGE_PATH: storage}):
            yield


@pytest.fixture
def run_config(tmp_path):
    """A RunConfig whose runs and artifacts live in a temp folder."""
    from spark_core.config import load_config

    def make(*overrides: str):
        return load_config(None, [f"runtime.runs_dir={tmp_path / 'runs'}", *overrides])

    return make
