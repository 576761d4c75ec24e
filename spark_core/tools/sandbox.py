"""Sandboxed tool execution: a pool of pre-forked workers (see ``worker.py``) behind a
thread-safe ``Sandbox.run``.

Workers start with a scrubbed environment — a short allow-list, never ``*_KEY``, ``*_TOKEN``
or other secrets — so nothing a tool child could read holds an API key. A worker that dies or
hangs is replaced, and only the call in flight is marked.
"""

from __future__ import annotations

import atexit
import json
import os
import queue
import re
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from spark_core.tools.base import ToolResult

ENV_ALLOW = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
_SECRET = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|AUTH", re.IGNORECASE)
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


@dataclass(frozen=True)
class SandboxLimits:
    cpu_seconds: float = 2.0
    wall_seconds: float = 5.0
    memory_mb: int = 512
    max_output_chars: int = 2000
    file_mb: int = 4
    open_files: int = 64

    @classmethod
    def from_config(cls, tools_cfg: Any) -> SandboxLimits:
        return cls(
            cpu_seconds=tools_cfg.cpu_seconds,
            wall_seconds=tools_cfg.wall_seconds,
            memory_mb=tools_cfg.memory_mb,
            max_output_chars=tools_cfg.max_output_chars,
        )


def scrubbed_env() -> dict[str, str]:
    """The worker's whole environment: an allow-list, single-threaded math libraries."""
    env = {k: v for k, v in os.environ.items() if k in ENV_ALLOW and not _SECRET.search(k)}
    env.update(
        PYTHONPATH=_PACKAGE_ROOT,
        PYTHONHASHSEED="0",
        PYTHONDONTWRITEBYTECODE="1",
        OMP_NUM_THREADS="1",
        OPENBLAS_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        HOME="/nonexistent",
    )
    return env


class _Worker:
    def __init__(self, limits: SandboxLimits, config: dict[str, Any]):
        self.log = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "spark_core.tools.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            env=scrubbed_env(),
            cwd="/",
            text=True,
            start_new_session=True,
        )
        self._send({"limits": asdict(limits), "config": config})
        hello = self._receive(timeout=120)
        if not hello or not hello.get("ready"):
            self.log.seek(0)
            tail = self.log.read()[-2000:]
            self.close()
            raise RuntimeError(f"sandbox worker failed to start:\n{tail}")
        self.tools = hello["tools"]

    def _send(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(message) + "\n")
        self.proc.stdin.flush()

    def _receive(self, timeout: float) -> dict[str, Any] | None:
        box: list[str] = []
        reader = threading.Thread(
            target=lambda: box.append(self.proc.stdout.readline()), daemon=True
        )
        reader.start()
        reader.join(timeout)
        if not box or not box[0]:
            return None
        return json.loads(box[0])

    def call(self, tool: str, text: str, wall_seconds: float) -> dict[str, Any] | None:
        self._send({"tool": tool, "input": text})
        return self._receive(timeout=wall_seconds + 30)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout, self.log):
            try:
                stream.close()
            except (OSError, AttributeError):  # a pipe to a dead worker
                pass


class Sandbox:
    """Runs tools in limited, network-less, secret-free child processes."""

    def __init__(
        self,
        limits: SandboxLimits | None = None,
        config: dict[str, Any] | None = None,
        workers: int = 1,
    ):
        self.limits = limits or SandboxLimits()
        self.config = config or {}
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._all: list[_Worker] = []
        self._lock = threading.Lock()
        for _ in range(workers):
            self._add_worker()
        atexit.register(self.close)

    def _add_worker(self) -> None:
        worker = _Worker(self.limits, self.config)
        with self._lock:
            self._all.append(worker)
        self._idle.put(worker)

    def run(self, tool: str, text: str) -> ToolResult:
        """Execute one call; failures come back as a result, never as an exception."""
        worker = self._idle.get()
        start = time.perf_counter()
        reply = None
        try:
            reply = worker.call(tool, text, self.limits.wall_seconds)
        except (BrokenPipeError, OSError, ValueError):
            reply = None
        finally:
            if reply is None or not worker.alive():
                worker.close()  # hung or dead: replace it
                with self._lock:
                    self._all.remove(worker)
                self._add_worker()
            else:
                self._idle.put(worker)
        if reply is None:
            elapsed = (time.perf_counter() - start) * 1000
            return ToolResult("error", "", "sandbox worker stopped responding", round(elapsed, 3))
        return ToolResult(reply["status"], reply["output"], reply["error"], reply["latency_ms"])

    def close(self) -> None:
        with self._lock:
            workers, self._all = self._all, []
        for worker in workers:
            worker.close()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_SHARED: dict[tuple, Sandbox] = {}
_SHARED_LOCK = threading.Lock()


def shared_sandbox(limits: SandboxLimits, config: dict[str, Any], workers: int) -> Sandbox:
    """One sandbox per (limits, config, size) per process: workers are expensive to start and
    every stage task in the process can share them."""
    key = (limits, tuple(sorted(config.items())), workers)
    with _SHARED_LOCK:
        sandbox = _SHARED.get(key)
        if sandbox is None:
            sandbox = _SHARED[key] = Sandbox(limits, config, workers)
        return sandbox
