"""Kill synthesis with SIGKILL in the middle of judging; the rerun finishes without repeating
any judge call that had completed (counted at a real loopback server), and its artifacts equal
those of an uninterrupted run."""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from spark_core.artifacts import ArtifactStore
from spark_core.models.response_cache import request_key
from spark_core.synthesis.barrier import SELECTED_SCHEMA
from spark_core.synthesis.rollout import FINAL_SCHEMA

pytestmark = pytest.mark.e2e  # a spark process killed and rerun
JUDGE_MODEL = "loopback-judge"
QUESTIONS = 14  # bundled sample, one per category, all train
EXPECTED_JUDGE_CALLS = QUESTIONS * 9  # one step, nine candidates each


def deterministic_score(messages: list[dict]) -> str:
    digest = hashlib.sha256(messages[-1]["content"].encode()).digest()
    return f"Score: {digest[0] % 11}"


def write_config(path: Path, runs: Path, model_dir: str, base_url: str) -> Path:
    config = {
        "data": {"source": "bundled", "per_category": 1, "eval_fraction": 0.0},
        "rollout": {
            "steps": 1,
            "shards": 2,
            "thought_tokens": 8,
            "input_tokens": 6,
            "viable_threshold": 5.0,
        },
        "generator": {"backend": "hf", "name": model_dir},
        "judge": {
            "backend": "openai",
            "name": JUDGE_MODEL,
            "base_url": base_url,
            "concurrency": 2,
            "max_retries": 1,
            # only the judgements reach the server: no capability probe, no preflight check
            "scoring": "text",
            "preflight": False,
        },
        "tools": {"parallelism": 2},
        "runtime": {"run_name": "resume", "runs_dir": str(runs)},
    }
    path.write_text(yaml.safe_dump(config))
    return path


def spark(config: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["OPENAI_API_KEY"] = "loopback-not-secret"
    return subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "synthesize", "--config", str(config)],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen) -> None:
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]


def synthesis_rows(runs: Path) -> tuple[list[dict], list[dict]]:
    store = ArtifactStore(str(runs / "resume" / "artifacts"))
    base = store.fs_path("")
    selected = sorted(p for p in store.fs.find(base) if p.endswith("/selected.parquet"))
    finals = sorted(p for p in store.fs.find(base) if p.endswith("/final_answers.parquet"))
    assert len(selected) == 1 and len(finals) == 1
    rel = lambda p: p[len(base) + 1 : -len(".parquet")]  # noqa: E731
    return (
        store.read(rel(selected[0]), SELECTED_SCHEMA).to_pylist(),
        store.read(rel(finals[0]), FINAL_SCHEMA).to_pylist(),
    )


def judge_key(messages: list[dict]) -> str:
    request = {"messages": [[m["role"], m["content"]] for m in messages]}
    return request_key("openai", JUDGE_MODEL, request, kind="judge")


def test_sigkill_mid_judging_then_resume(tmp_path, tiny_model_dir, loopback_openai):
    server = loopback_openai
    server.reset()
    server.state.reply_fn = deterministic_score
    server.state.latency_s = 0.05

    clean_runs = tmp_path / "clean"
    finish(
        spark(write_config(tmp_path / "clean.yaml", clean_runs, tiny_model_dir, server.base_url))
    )
    assert server.state.requests == EXPECTED_JUDGE_CALLS

    server.reset()
    server.state.reply_fn = deterministic_score
    server.state.latency_s = 0.05
    runs = tmp_path / "killed"
    config = write_config(tmp_path / "killed.yaml", runs, tiny_model_dir, server.base_url)
    proc = spark(config)
    deadline = time.monotonic() + 300
    while server.state.requests < EXPECTED_JUDGE_CALLS // 2:
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.monotonic() < deadline, "judging never reached the middle"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    requests_before_kill = server.state.requests
    assert requests_before_kill < EXPECTED_JUDGE_CALLS
    with sqlite3.connect(runs / "cache" / "responses.sqlite") as db:
        completed = {k for (k,) in db.execute("SELECT key FROM responses")}

    finish(spark(config))
    asked = Counter(judge_key(m) for m in server.state.log)
    repeated = {k for k, n in asked.items() if n > 1}
    assert len(asked) == EXPECTED_JUDGE_CALLS  # every candidate judged
    assert not (repeated & completed)  # no completed judge call was paid for twice
    # at most the calls in flight at the kill: 2 shards in parallel x judge concurrency 2
    assert len(repeated) <= 4
    assert synthesis_rows(runs) == synthesis_rows(clean_runs)
