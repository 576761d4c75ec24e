"""Shared fixtures: Prefect's test harness, the shared MMLU-Pro data, the tiny model, the loopback
OpenAI server, the bwrap check (the helpers test modules share are in tests/helpers.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# one torch thread per process (set before torch is imported): the tests' models are tiny,
# so a second thread buys no speed, only synchronisation; and the suite's processes (the
# sandbox workers, servers, subprocess runs) share the cores. 2-3x faster on 2 busy cores.
os.environ.setdefault("OMP_NUM_THREADS", "1")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MMLU_PRO_TEST = SHARED_DATA / "mmlu_pro_test.parquet"


def pytest_collection_finish(session):
    """Collection imported torch, transformers, Prefect and every test module: half a million
    objects that live as long as the process. Frozen out of the garbage collector's view, the
    collections that come later (each module's model release, every full automatic one) scan
    only what the tests made: ~0.3-0.5 s less each."""
    import gc

    gc.collect()
    gc.freeze()


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


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> str:
    """A tiny, randomly initialised Llama with the real SmolLM2 tokenizer (chat template and
    single-token digits), built here: fast enough for unit tests, real enough for the code."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from spark_core.models.hf.default_model import DEFAULT_MODEL, resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(DEFAULT_MODEL))
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    path = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def loopback_openai():
    """A real OpenAI-compatible HTTP server on 127.0.0.1 for the whole session."""
    from tests.openai_server import LoopbackOpenAI

    with LoopbackOpenAI() as server:
        yield server


def bwrap_problem() -> str | None:
    """Why bubblewrap cannot run the sandbox here, or None when it can."""
    import shutil
    import subprocess

    if shutil.which("bwrap") is None:
        return "bubblewrap is not installed (install: `make install` as root, or apt-get)"
    probe = subprocess.run(
        ["bwrap", "--unshare-all", "--unshare-user", "--ro-bind", "/", "/", "--", "true"],
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        return f"bwrap cannot create namespaces here: {probe.stderr.strip()[:200]}"
    return None


@pytest.fixture(scope="session")
def require_bwrap():
    """Tests of the default (bwrap) sandbox. In CI a missing bwrap is a failure — `make
    install` provides it there — so the boundary is never silently untested; elsewhere it is
    a skip that says how to install it."""
    problem = bwrap_problem()
    if problem and os.environ.get("CI"):
        pytest.fail(f"{problem}; CI must test the bwrap sandbox")
    if problem:
        pytest.skip(problem)


@pytest.fixture(scope="module", autouse=True)
def _models_fresh_per_module():
    """Weights are shared process-wide (REGISTRY: one copy of each model, adapters injected
    into it while a policy runs); a module's leftovers must not reach the next module."""
    yield
    from spark_core.models.registry import REGISTRY

    REGISTRY.release_models()


@pytest.fixture(scope="session", autouse=True)
def _no_sandbox_scratch_left():
    """Every scratch root a sandbox of this session made on the host is gone at the end."""
    yield
    import sys

    sandbox = sys.modules.get("spark_core.tools.sandbox")
    if sandbox is not None:
        for sb in list(sandbox._SHARED.values()):
            sb.close()
        left = [root for root in sandbox.CREATED_ROOTS if os.path.exists(root)]
        assert left == [], f"sandbox scratch left behind: {left}"


# a real Prefect server and one pipeline run on it, shared by the deployment and browser tests
from tests.deploy_fixtures import pipeline_run, prefect_server  # noqa: E402, F401
