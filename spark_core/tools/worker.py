"""The sandbox worker: a long-lived process, started with a scrubbed environment, that has
already imported every tool's libraries and forks one fresh, locked-down child per call.

Protocol on stdin/stdout, one JSON object per line: first ``{"limits":…, "config":…}`` (the
worker answers ``{"ready": true, …}``), then ``{"tool": name, "input": text}`` requests, each
answered by a ToolResult dict. Run with ``python -m spark_core.tools.worker``.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import sys
import tempfile
import time
import traceback
from typing import Any

RESULT_LIMIT_BYTES = 1 << 20

# Imported before any fork, so a child — which may run as an unprivileged user that cannot
# read the Python installation — still has them. This is also what the python tool offers.
PRELOAD = (
    "math",
    "cmath",
    "fractions",
    "decimal",
    "statistics",
    "itertools",
    "functools",
    "collections",
    "random",
    "re",
    "json",
    "datetime",
    "string",
    "heapq",
    "bisect",
    "operator",
    "textwrap",
    "dataclasses",
    "copy",
    "time",
    "typing",
    "encodings.idna",
    "numpy",
    "numpy.linalg",
    "scipy",
    "scipy.stats",
    "scipy.optimize",
    "scipy.integrate",
    "scipy.special",
    "scipy.linalg",
    "sympy",
)


def _child(tool_name: str, text: str, limits: dict[str, Any], scratch: str, write_fd: int) -> None:
    """Runs in the forked child; never returns."""
    status, output, error = "error", "", ""
    try:
        from spark_core.tools import guard
        from spark_core.tools.base import Rejected, ToolError
        from spark_core.tools.registry import get_tool

        tool = get_tool(tool_name)
        guard.enter(
            scratch,
            limits["cpu_seconds"],
            limits["memory_mb"],
            limits["file_mb"],
            limits["open_files"],
        )
        import random

        random.seed(0)
        try:
            output = str(tool.run(text))
            status = "ok"
        except guard.SandboxViolation as exc:
            status, error = "rejected", str(exc)
        except Rejected as exc:
            status, error = "rejected", str(exc)
        except ToolError as exc:
            error = str(exc)
        except MemoryError:
            error = f"MemoryError: memory limit ({limits['memory_mb']} MB) exceeded"
        except RecursionError:
            error = "RecursionError: expression or program nested too deeply"
        except BaseException as exc:  # model-written code can raise anything
            error = f"{type(exc).__name__}: {exc}"
        if guard.violations and status != "rejected":
            status, error = "rejected", f"sandbox: {guard.violations[0]} is not allowed"
    except BaseException as exc:  # failure while entering the sandbox itself
        error = f"sandbox setup failed: {type(exc).__name__}: {exc}"
        traceback.print_exc()
    cap = limits["max_output_chars"]
    if len(output) > cap:
        output = output[:cap] + f"\n[truncated {len(output) - cap} characters]"
    payload = json.dumps({"status": status, "output": output, "error": error[:cap]}).encode()
    try:
        os.write(write_fd, payload[:RESULT_LIMIT_BYTES])
    finally:
        os._exit(0)


def _collect(read_fd: int, deadline: float) -> tuple[bytes, bool]:
    chunks, size = [], 0
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return b"".join(chunks), True
        ready, _, _ = select.select([read_fd], [], [], remaining)
        if not ready:
            continue
        chunk = os.read(read_fd, 65536)
        if not chunk:
            return b"".join(chunks), False
        size += len(chunk)
        if size <= RESULT_LIMIT_BYTES:
            chunks.append(chunk)


def execute(tool: str, text: str, limits: dict[str, Any], root: str) -> dict[str, Any]:
    start = time.perf_counter()
    scratch = tempfile.mkdtemp(prefix="call-", dir=root)
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        _child(tool, text, limits, scratch, write_fd)
    os.close(write_fd)
    try:
        data, timed_out = _collect(read_fd, time.monotonic() + limits["wall_seconds"])
    finally:
        os.close(read_fd)
    if timed_out:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    _, wait_status = os.waitpid(pid, 0)
    shutil.rmtree(scratch, ignore_errors=True)
    latency_ms = (time.perf_counter() - start) * 1000
    if timed_out:
        result = {
            "status": "timeout",
            "output": "",
            "error": f"wall-time limit ({limits['wall_seconds']} s) exceeded",
        }
    elif data:
        result = json.loads(data)
    elif os.WIFSIGNALED(wait_status) and os.WTERMSIG(wait_status) in (
        signal.SIGXCPU,
        signal.SIGKILL,
    ):
        result = {
            "status": "timeout",
            "output": "",
            "error": f"CPU-time limit ({limits['cpu_seconds']} s) exceeded",
        }
    elif os.WIFSIGNALED(wait_status):
        sig = signal.Signals(os.WTERMSIG(wait_status)).name
        result = {"status": "error", "output": "", "error": f"tool process killed by {sig}"}
    else:
        result = {"status": "error", "output": "", "error": "tool process exited without a result"}
    result["latency_ms"] = round(latency_ms, 3)
    return result


def main() -> None:
    # the protocol owns the original stdout; anything a library prints goes to stderr
    stdin, stdout = sys.stdin, os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    sys.dont_write_bytecode = True
    init = json.loads(stdin.readline())
    limits, config = init["limits"], init.get("config", {})
    import importlib

    from spark_core.tools.registry import discover

    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    for tool in discover().values():  # import libraries and build indexes once, pre-fork
        if tool.prepare is not None:
            tool.prepare(config)
        if tool.example:
            try:
                tool.run(tool.example)  # also warms the lazy imports of its code path
            except Exception as exc:
                print(f"warm-up of {tool.name} failed: {exc}", file=sys.stderr)
    root = tempfile.mkdtemp(prefix="spark-sandbox-")
    os.chmod(root, 0o711)
    stdout.write(
        json.dumps({"ready": True, "pid": os.getpid(), "tools": sorted(discover())}) + "\n"
    )
    stdout.flush()
    try:
        for line in stdin:
            request = json.loads(line)
            result = execute(request["tool"], request["input"], limits, root)
            stdout.write(json.dumps(result) + "\n")
            stdout.flush()
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
