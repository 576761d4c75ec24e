"""Sandboxed tool execution: a pool of pre-forked workers (see ``worker.py``) behind a
thread-safe ``Sandbox.run``.

Workers run inside bubblewrap (``isolation="bwrap"``, see ``bwrap.py``) or, when chosen
explicitly, as plain processes (``"process"``, the weaker layered sandbox of ``lockdown.py``).
They
start with a scrubbed environment — a short allow-list, never ``*_KEY``, ``*_TOKEN`` or other
secrets. Every reply carries the request's id and is checked against the reply schema and a
size cap; a worker that dies, hangs or answers out of turn is killed and replaced, and only the
call in flight is marked. The parent owns the scratch root and removes it even when a worker was
killed with ``SIGKILL``.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import Future
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from spark_core.config import ToolsConfig, default_of
from spark_core.tools import bwrap, cgroup
from spark_core.tools.base import ToolResult, ToolStatus
from spark_core.tools.worker import clean_text

log = logging.getLogger(__name__)
ENV_ALLOW = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
_SECRET = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|AUTH", re.IGNORECASE)
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])
STATUSES = tuple(ToolStatus)
CREATED_ROOTS: list[str] = []  # host scratch roots made by this process (tests check cleanup)
PROCESS_WARNING = (
    "tools.isolation is 'process': tool calls run without bubblewrap's namespaces (no private "
    "filesystem view, PID or IPC namespace); see the README's security section"
)
NO_CGROUP_WARNING = (
    "no memory cgroup for the sandbox workers ({reason}): a call's memory is capped by rlimits "
    "only — address space and the bwrap /tmp each tools.memory_mb, each file {file_mb} MB — "
    "and those add up; run as root or in a delegated cgroup v2 subtree for one cap "
    "(docs/security.md)"
)


@dataclass(frozen=True)
class SandboxLimits:
    """Per-call limits, and ``isolation``: how the workers are walled off from the host. The
    limits the ``tools`` section sets default to its defaults; ``file_mb`` and ``open_files``
    are the sandbox's own (no setting)."""

    cpu_seconds: float = default_of(ToolsConfig, "cpu_seconds")
    wall_seconds: float = default_of(ToolsConfig, "wall_seconds")
    memory_mb: int = default_of(ToolsConfig, "memory_mb")
    max_output_chars: int = default_of(ToolsConfig, "max_output_chars")
    file_mb: int = 4
    open_files: int = 64
    isolation: Literal["bwrap", "process"] = default_of(ToolsConfig, "isolation")

    FROM_CONFIG: ClassVar[tuple[str, ...]] = (
        "cpu_seconds",
        "wall_seconds",
        "memory_mb",
        "max_output_chars",
        "isolation",
    )

    @classmethod
    def from_config(cls, tools_cfg: ToolsConfig) -> SandboxLimits:
        return cls(**{name: getattr(tools_cfg, name) for name in cls.FROM_CONFIG})

    @property
    def reply_bytes(self) -> int:
        """The most a well-formed reply line can take (JSON escapes at most 6x a character)."""
        return 12 * self.max_output_chars + 4096


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


def valid_reply(reply: Any, call_id: int, limits: SandboxLimits) -> bool:
    """A reply to *this* request, with the ToolResult fields and types, within the caps."""
    if not isinstance(reply, dict) or reply.get("id") != call_id:
        return False
    if set(reply) != {"id", "status", "output", "error", "latency_ms"}:
        return False
    latency = reply["latency_ms"]
    return (
        reply["status"] in STATUSES
        and isinstance(reply["output"], str)
        and isinstance(reply["error"], str)
        and len(reply["output"]) <= limits.max_output_chars + 64
        and len(reply["error"]) <= limits.max_output_chars
        and isinstance(latency, (int, float))
        and not isinstance(latency, bool)
        and 0 <= latency < 1e9
    )


class _Worker:
    def __init__(self, limits: SandboxLimits, config: dict[str, Any]):
        self.limits = limits
        self.log = tempfile.TemporaryFile(mode="w+")
        self.root: str | None = None
        self.next_id = 0
        self.oom_killed = False  # the last call was killed for the memory cap
        self._closing = threading.Lock()  # a call's thread and Sandbox.close() may race here
        command = [sys.executable, "-m", "spark_core.tools.worker"]
        if limits.isolation == "bwrap":
            command = bwrap.command(command, config.get("corpus"), limits.memory_mb << 20)
        else:
            self.root = tempfile.mkdtemp(prefix="spark-sandbox-")
            os.chmod(self.root, 0o711)
            CREATED_ROOTS.append(self.root)
        self.cgroup, self.no_cgroup_reason = cgroup.create()
        if self.cgroup is not None:
            command = cgroup.wrap(command, self.cgroup)
        self.proc = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            env=scrubbed_env(),
            cwd="/",
            start_new_session=True,
        )
        init = {"limits": asdict(limits), "config": config, "root": self.root}
        init["isolation"] = limits.isolation
        try:
            self._send(init)
        except OSError:
            pass  # reported by wait_ready

    def wait_ready(self) -> _Worker:
        """Wait for the worker's hello (it imports every tool's libraries first)."""
        hello = None
        try:
            hello = self._receive(timeout=120, limit=1 << 20)
        except OSError:
            pass
        if not isinstance(hello, dict) or not hello.get("ready"):
            self.log.seek(0)
            tail = self.log.read()[-2000:]
            self.close()
            isolation = self.limits.isolation
            raise RuntimeError(f"sandbox worker ({isolation}) failed to start:\n{tail}")
        self.tools = hello["tools"]
        if self.cgroup is not None and not self.cgroup.holds(self.proc.pid):
            self.cgroup.remove()
            self.cgroup, self.no_cgroup_reason = None, "the worker could not join its cgroup"
        if self.cgroup is not None:  # the worker's own footprint, plus what one call may take
            self.cgroup.cap(self.cgroup.usage() + (self.limits.memory_mb << 20))
        return self

    def _send(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(message).encode() + b"\n")
        self.proc.stdin.flush()

    def _receive(self, timeout: float, limit: int) -> Any:
        """One reply line, parsed; None on silence, EOF, an oversized line or bad JSON."""
        box: list[bytes] = []
        reader = threading.Thread(
            target=lambda: box.append(self.proc.stdout.readline(limit + 1)), daemon=True
        )
        reader.start()
        reader.join(timeout)
        if not box or not box[0].endswith(b"\n") or len(box[0]) > limit:
            return None
        try:
            return json.loads(box[0])
        except (ValueError, UnicodeDecodeError, RecursionError):
            return None

    def call(self, tool: str, text: str) -> dict[str, Any] | None:
        """The validated reply to this call, or None (then the worker must be replaced)."""
        self.next_id += 1
        self.oom_killed = False
        kills = self.cgroup.oom_kills() if self.cgroup is not None else 0
        self._send({"id": self.next_id, "tool": tool, "input": text})
        reply = self._receive(self.limits.wall_seconds + 30, self.limits.reply_bytes)
        self.oom_killed = self.cgroup is not None and self.cgroup.oom_kills() > kills
        if not valid_reply(reply, self.next_id, self.limits):
            return None
        if self.oom_killed and reply["status"] in (ToolStatus.TIMEOUT, ToolStatus.ERROR):
            reply.update(status=ToolStatus.ERROR, error=self.memory_error)
        return reply

    @property
    def memory_error(self) -> str:
        return f"memory limit ({self.limits.memory_mb} MB) exceeded: the kernel killed the call"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        """Idempotent and thread-safe: the calling thread and Sandbox.close() can both get here."""
        with self._closing:
            if self.proc.poll() is None:
                self.proc.kill()  # bwrap: --die-with-parent takes the whole namespace with it
            self.proc.wait()
            for stream in (self.proc.stdin, self.proc.stdout, self.log):
                try:
                    stream.close()
                # a pipe to a dead worker; ValueError/RuntimeError: a reader thread still inside
                # readline() on this stream while it is closed
                except (OSError, AttributeError, ValueError, RuntimeError):
                    pass
            if self.root is not None:
                shutil.rmtree(self.root, ignore_errors=True)
                self.root = None
            if self.cgroup is not None:
                self.cgroup.remove()
                self.cgroup = None


class _Spawner:
    """Starts workers on one long-lived thread. Workers die with the *thread* that started
    them (``PR_SET_PDEATHSIG``, bwrap's ``--die-with-parent``), so a replacement must not be
    started on a short-lived pool thread."""

    def __init__(self) -> None:
        self._jobs: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._stopped = False
        self._thread = threading.Thread(target=self._loop, name="sandbox-spawner", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while (job := self._jobs.get()) is not None:
            make, future = job
            try:
                future.set_result(make())
            except BaseException as exc:  # handed to the caller
                future.set_exception(exc)

    def spawn(self, make) -> Any:
        future: Future = Future()
        with self._lock:
            if self._stopped:
                raise RuntimeError("sandbox is closed")
            self._jobs.put((make, future))
        return future.result()

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            self._jobs.put(None)


class Sandbox:
    """Runs tools in limited, network-less, secret-free child processes."""

    def __init__(
        self,
        limits: SandboxLimits | None = None,
        config: dict[str, Any] | None = None,
        # not tools.parallelism: a one-off sandbox (a time estimate's calibration, `spark
        # tool`) needs one worker; the stages pass tools.parallelism (tasks/tools.py)
        workers: int = 1,
    ):
        self.limits = limits or SandboxLimits()
        self.config = config or {}
        if self.limits.isolation == "bwrap":
            bwrap.find_bwrap()  # refuse to start, with the fix in the message
        else:
            log.warning(PROCESS_WARNING)
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._all: list[_Worker] = []
        self._lock = threading.Lock()
        self._closed = False
        self._spawner = _Spawner()
        try:
            for worker in self._spawner.spawn(lambda: self._start(workers)):
                with self._lock:
                    self._all.append(worker)
                self._idle.put(worker)
        except BaseException:
            self.close()
            raise
        reasons = {w.no_cgroup_reason for w in self._all if w.cgroup is None}
        if reasons:
            log.warning(
                NO_CGROUP_WARNING.format(
                    reason="; ".join(sorted(reasons)), file_mb=self.limits.file_mb
                )
            )
        atexit.register(self.close)

    def _start(self, count: int) -> list[_Worker]:
        """Start ``count`` workers at once (their imports overlap), then wait for each."""
        starting = [_Worker(self.limits, self.config) for _ in range(count)]
        ready = []
        try:
            for worker in starting:
                ready.append(worker.wait_ready())
        finally:
            if len(ready) < len(starting):
                for worker in starting:
                    worker.close()
        return ready

    def _add_worker(self) -> _Worker:
        worker = self._spawner.spawn(lambda: self._start(1)[0])
        with self._lock:
            self._all.append(worker)
        return worker

    def _replace(self, worker: _Worker) -> _Worker:
        worker.close()  # a closed sandbox then refuses to spawn (RuntimeError)
        with self._lock:
            if worker in self._all:
                self._all.remove(worker)
        return self._add_worker()

    def run(self, tool: str, text: str) -> ToolResult:
        """Execute one call; failures come back as a result, never as an exception."""
        worker = self._idle.get() if self._all else None
        if worker is None:
            return ToolResult(ToolStatus.ERROR, "", "sandbox is closed", 0.0)
        start = time.perf_counter()
        reply = None
        try:
            if not worker.alive():  # died between calls: this call gets a fresh one
                worker = self._replace(worker)
            reply = worker.call(tool, text)
        except (OSError, ValueError, RuntimeError):
            reply = None
        finally:
            oom_killed = worker.oom_killed
            if self._closed:
                worker.close()
                worker = None
            elif reply is None or not worker.alive():
                try:
                    worker = self._replace(worker)  # hung, dead or out of turn
                except RuntimeError as exc:
                    log.error("sandbox worker could not be replaced: %s", exc)
                    worker = None
            if worker is not None:
                self._idle.put(worker)
        if reply is None:
            elapsed = (time.perf_counter() - start) * 1000
            error = "sandbox worker stopped responding or sent an invalid reply"
            if oom_killed:
                error = f"memory limit ({self.limits.memory_mb} MB) exceeded: worker killed"
            return ToolResult(ToolStatus.ERROR, "", error, round(elapsed, 3))
        output, error = clean_text(reply["output"]), clean_text(reply["error"])
        return ToolResult(ToolStatus(reply["status"]), output, error, reply["latency_ms"])

    def close(self) -> None:
        with self._lock:
            self._closed = True
            workers, self._all = self._all, []
        for worker in workers:
            worker.close()
        self._spawner.stop()

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
        elif limits.isolation == "process":
            log.warning(PROCESS_WARNING)  # every stage that uses it says so
        return sandbox
