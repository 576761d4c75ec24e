"""The sandbox worker: a long-lived process, started with a scrubbed environment (inside
bubblewrap under ``bwrap`` isolation), that has already imported every tool's libraries and
forks one fresh, locked-down child per call.

Protocol on stdin/stdout, one JSON object per line: first ``{"limits":…, "config":…, "root":…}``
(the worker answers ``{"ready": true, …}``), then ``{"id": n, "tool": name, "input": text}``
requests, each answered by a ToolResult dict that carries the same ``id``. The child never sees
the protocol: it holds only the write end of its own result pipe, and the worker validates what
comes back through it. Run with ``python -m spark_core.tools.worker``.
"""

from __future__ import annotations

import json
import os
import resource
import select
import shutil
import signal
import sys
import tempfile
import time
from typing import Any

from spark_core.tools.sweep import sweep as sweep_namespace

RESULT_LIMIT_BYTES = 1 << 20
CHILD_STATUSES = ("ok", "error", "rejected")
CALL_UID_BASE = 1_000_000_000  # process mode as root: call uid = base + worker pid
PR_SET_PDEATHSIG, PR_SET_DUMPABLE = 1, 4
EXIT_EOF = 3  # a call process that found the protocol pipe closed: the zygote exits too
ZYGOTE_MARGIN_S = 10.0  # beyond the wall time, before the zygote kills a call process

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


def _close_fds(keep: int) -> None:
    """Every descriptor but the reply pipe goes: the protocol pipes, logs, scratch handles."""
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    limit = 65536 if limit == resource.RLIM_INFINITY else limit
    os.closerange(0, keep)
    os.closerange(keep + 1, limit)
    null = os.open(os.devnull, os.O_RDWR)  # fd 0 (the lowest free), then 1 and 2
    os.dup2(null, 1)
    os.dup2(null, 2)


def _child(request: dict[str, Any], limits: dict[str, Any], scratch: str, write_fd: int) -> None:
    """Runs in the forked child; never returns (the caller ``_exit``s)."""
    _close_fds(keep=write_fd)
    status, output, error = "error", "", ""
    try:
        from spark_core.tools import guard
        from spark_core.tools.base import Rejected, ToolError
        from spark_core.tools.registry import get_tool

        tool_name, text = request["tool"], request["input"]
        del request  # nothing of the protocol stays reachable from the tool's frames
        tool = get_tool(tool_name)
        guard.enter(
            scratch,
            limits["cpu_seconds"],
            limits["memory_mb"],
            limits["file_mb"],
            limits["open_files"],
            uid=limits["call_uid"],
            parent=limits["worker_pid"],
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
    cap = limits["max_output_chars"]
    if len(output) > cap:
        output = output[:cap] + f"\n[truncated {len(output) - cap} characters]"
    payload = json.dumps({"status": status, "output": output, "error": error[:cap]}).encode()
    os.write(write_fd, payload[:RESULT_LIMIT_BYTES])


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
        if size <= RESULT_LIMIT_BYTES + 1:
            chunks.append(chunk)


def _exited_by(pid: int, deadline: float) -> bool:
    """Wait, without reaping, until ``pid`` exits or ``deadline`` passes."""
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        pidfd = None
    try:
        while True:
            if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if pidfd is not None:
                select.select([pidfd], [], [], remaining)
            else:
                time.sleep(min(remaining, 0.005))
    finally:
        if pidfd is not None:
            os.close(pidfd)


def parse_child_result(data: bytes, cap: int) -> dict[str, Any] | None:
    """The child's result if it is well-formed, capped to the output limit; else None."""
    if len(data) > RESULT_LIMIT_BYTES:
        return None
    try:
        result = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    if not isinstance(result, dict) or set(result) != {"status", "output", "error"}:
        return None
    status, output, error = result["status"], result["output"], result["error"]
    if status not in CHILD_STATUSES or not isinstance(output, str) or not isinstance(error, str):
        return None
    note = f"\n[truncated {len(output) - cap} characters]"
    if len(output) > cap + len(note):
        output = output[:cap] + note
    return {"status": status, "output": clean_text(output), "error": clean_text(error[:cap])}


def clean_text(text: str) -> str:
    """Valid UTF-8 only: a lone surrogate would make the Parquet writer raise."""
    return text.encode("utf-8", "replace").decode("utf-8")


def execute(request: dict[str, Any], limits: dict[str, Any], root: str, sweep: bool) -> dict:
    """Run one call in a fresh child; every process of the call is gone when this returns."""
    start = time.perf_counter()
    deadline = time.monotonic() + limits["wall_seconds"]
    scratch = tempfile.mkdtemp(prefix="call-", dir=root)
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_fd)
            _child(request, limits, scratch, write_fd)
        finally:
            os._exit(0)
    os.close(write_fd)
    try:
        data, timed_out = _collect(read_fd, deadline)
    finally:
        os.close(read_fd)
    exited = _exited_by(pid, deadline)
    try:
        os.killpg(pid, signal.SIGKILL)  # the call's group; its leader is not reaped yet
    except (ProcessLookupError, PermissionError):
        pass
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    _, wait_status = os.waitpid(pid, 0)
    if sweep:
        sweep_namespace(root)
    shutil.rmtree(scratch, ignore_errors=True)
    latency_ms = (time.perf_counter() - start) * 1000
    if timed_out or not exited:
        result = {
            "status": "timeout",
            "output": "",
            "error": f"wall-time limit ({limits['wall_seconds']} s) exceeded",
        }
    elif data:
        result = parse_child_result(data, limits["max_output_chars"]) or {
            "status": "error",
            "output": "",
            "error": "sandbox: the tool process sent a malformed result",
        }
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


def _prctl(option: int, value: int) -> None:
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0)


def _serve(line: bytes, limits: dict[str, Any], root: str, sweep: bool, id_fd: int) -> str:
    """One request line in, one reply line out; the call's id goes to the zygote first, so
    that it can answer for a call process that dies."""
    try:
        request = json.loads(line)
        call_id = request["id"]
        if not isinstance(request.get("tool"), str) or not isinstance(request.get("input"), str):
            raise ValueError("tool and input must be strings")
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        return json.dumps({"id": None, "status": "error", "output": "", "error": "bad request"})
    if isinstance(call_id, int) and not isinstance(call_id, bool) and 0 <= call_id < 1 << 62:
        os.write(id_fd, str(call_id).encode())
    result = execute(request, limits, root, sweep)
    result["id"] = call_id
    return json.dumps(result)


def _read_line(fd: int) -> bytes | None:
    """One request line from the protocol pipe, read unbuffered (the parent writes one request
    and waits for its reply, so nothing of the next call is read ahead); None at EOF."""
    chunks: list[bytes] = []
    while True:
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return None
        chunks.append(chunk)
        if chunk.endswith(b"\n"):
            return b"".join(chunks)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _call_process(limits: dict[str, Any], root: str, sweep: bool, out_fd: int, id_fd: int):
    """The process that owns one call: forked from the zygote, which has not read the request,
    it reads the request, runs the tool in a child of its own, sweeps, answers and exits. Nothing
    of the call ever enters a process that a later call is forked from."""
    code = 1
    try:
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # process mode: never outlive the zygote
        if os.getppid() != limits["worker_pid"]:
            os._exit(1)
        limits = {**limits, "worker_pid": os.getpid()}  # the tool's child checks its parent
        line = _read_line(0)
        if line is None:
            code = EXIT_EOF
        else:
            _write_all(out_fd, _serve(line, limits, root, sweep, id_fd).encode() + b"\n")
            code = 0
    finally:
        os._exit(code)


def _zygote_wait(pid: int, id_r: int, wall: float) -> tuple[int, int | None]:
    """Wait for the call process: without limit while it waits for a request, then at most
    the wall time and a margin. Returns its wait status and the call's id, if it sent one."""
    call_id, deadline = None, None
    pidfd = os.pidfd_open(pid)
    try:
        while True:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            watch = [pidfd] if deadline is not None else [pidfd, id_r]
            ready, _, _ = select.select(watch, [], [], timeout)
            if id_r in ready or (pidfd in ready and select.select([id_r], [], [], 0)[0]):
                data = os.read(id_r, 32)
                call_id = int(data) if data.isdigit() else None
                deadline = time.monotonic() + wall + ZYGOTE_MARGIN_S
            if pidfd in ready:
                break
            if not ready:
                os.kill(pid, signal.SIGKILL)
                break
    finally:
        os.close(pidfd)
    _, status = os.waitpid(pid, 0)
    return status, call_id


def _zygote(limits: dict[str, Any], root: str, sweep: bool, out_fd: int) -> None:
    """Fork one call process per call and wait for it; never read a request or a reply."""
    id_r, id_w = os.pipe()
    while True:
        # the call process is forked once a request is waiting (readable, not read): between
        # calls the worker is alone, and no process exists that a call could reach early
        select.select([0], [], [])
        pid = os.fork()
        if pid == 0:
            os.close(id_r)
            _call_process(limits, root, sweep, out_fd, id_w)
        status, call_id = _zygote_wait(pid, id_r, limits["wall_seconds"])
        if os.WIFEXITED(status) and os.WEXITSTATUS(status) == EXIT_EOF:
            return
        if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
            continue
        # the call process died without answering: answer for it, and sweep in a process of
        # its own (the sweep lists file names the call chose)
        reply = {"id": call_id, "status": "error", "output": "", "latency_ms": 0.0}
        reply["error"] = "sandbox: the call process died without a reply"
        _write_all(out_fd, json.dumps(reply).encode() + b"\n")
        janitor = os.fork()
        if janitor == 0:
            try:
                if sweep:
                    sweep_namespace(root)
            finally:
                os._exit(0)
        os.waitpid(janitor, 0)


def main() -> None:
    # the protocol owns the original stdout; anything a library prints goes to stderr
    out_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    sys.dont_write_bytecode = True
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # the worker never outlives its Sandbox
    _prctl(PR_SET_DUMPABLE, 0)  # a child of the same uid cannot ptrace it or open its /proc
    init = json.loads(_read_line(0) or b"{}")
    limits, config = init["limits"], init.get("config", {})
    sweep = init.get("isolation") == "bwrap"
    limits["worker_pid"] = os.getpid()
    limits["call_uid"] = CALL_UID_BASE + os.getpid() if os.geteuid() == 0 else os.geteuid()
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
    from spark_core.tools import audit, guard  # noqa: F401 - imported once here, not per call

    audit.find_references()  # where the blocked modules are held, found once
    # process mode: the parent made (and will remove) the scratch root; bwrap: a private tmpfs
    root = init.get("root") or tempfile.mkdtemp(prefix="spark-sandbox-")
    os.chmod(root, 0o711)
    hello = {"ready": True, "pid": os.getpid(), "tools": sorted(discover())}
    _write_all(out_fd, json.dumps(hello).encode() + b"\n")
    del init
    _zygote(limits, root, sweep, out_fd)


if __name__ == "__main__":
    main()
