"""The worker's supervisor: the one process of a worker that reads requests and writes
replies, so that no process a call is forked from ever holds a request or a result.

A worker is two long-lived processes. The *zygote* (``worker.py``) imports every tool's
libraries and forks one child per call; it never reads the protocol. The *supervisor*, forked
from it before those imports, owns the protocol: it reads a request, makes the call's scratch
directory and two pipes, hands the child's ends to the zygote over a ``SOCK_SEQPACKET`` socket
(``SCM_RIGHTS``), writes the request into the child's pipe, collects and validates the
child's result, enforces the wall time (it gets a pidfd of the child), sweeps, and answers.
The child reads its own request; the supervisor's memory, which holds every earlier call,
is never inherited by a call, and a call cannot read it (it is not dumpable).
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
import tempfile
import time
from typing import Any

from spark_core.tools.base import ToolStatus
from spark_core.tools.sweep import sweep as sweep_namespace

RESULT_LIMIT_BYTES = 1 << 20
# what a call's child may report; a timeout is the supervisor's to say
CHILD_STATUSES = (ToolStatus.OK, ToolStatus.ERROR, ToolStatus.REJECTED)


def clean_text(text: str) -> str:
    """Valid UTF-8 only: a lone surrogate would make the Parquet writer raise."""
    return text.encode("utf-8", "replace").decode("utf-8")


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


def _send_request(write_fd: int, view: memoryview, deadline: float) -> None:
    """Write the rest of the request into the child's pipe; a child that died or stalls gets
    the rest of it dropped (its result then says what happened)."""
    try:
        while view and time.monotonic() < deadline:
            select.select([], [write_fd], [], max(0.0, deadline - time.monotonic()))
            try:
                view = view[os.write(write_fd, view) :]
            except BlockingIOError:
                continue
    except OSError:
        pass  # BrokenPipeError: the child is gone
    finally:
        os.close(write_fd)


def _exit_status(ctl: socket.socket, deadline: float | None) -> int | None:
    """The child's wait status, sent by the zygote once it reaped it; None at the deadline."""
    timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
    if not select.select([ctl], [], [], timeout)[0]:
        return None
    message = ctl.recv(64)
    if not message.startswith(b"exit "):
        raise RuntimeError("sandbox zygote went away")
    return int(message[5:])


def execute(
    request: dict[str, Any], limits: dict[str, Any], root: str, sweep: bool, ctl: socket.socket
) -> dict[str, Any]:
    """Run one call in a fresh child of the zygote; it is gone when this returns."""
    start = time.perf_counter()
    deadline = time.monotonic() + limits["wall_seconds"]
    scratch = tempfile.mkdtemp(prefix="call-", dir=root)
    req_r, req_w = os.pipe()
    res_r, res_w = os.pipe()
    os.set_blocking(req_w, False)
    view = memoryview(json.dumps(request).encode())
    del request  # nothing of this call needs to stay reachable here
    try:  # as much as the pipe holds (usually all of it) before the child exists
        view = view[os.write(req_w, view) :]
    except BlockingIOError:
        pass
    socket.send_fds(ctl, [b"call " + scratch.encode()], [req_r, res_w])
    os.close(req_r)
    os.close(res_w)
    message, fds, _, _ = socket.recv_fds(ctl, 64, 1)
    if message != b"pid" or len(fds) != 1:
        raise RuntimeError("sandbox zygote went away")
    pidfd = fds[0]
    try:
        _send_request(req_w, view, deadline)
        try:
            data, timed_out = _collect(res_r, deadline)
        finally:
            os.close(res_r)
        wait_status = _exit_status(ctl, deadline)
        exited = wait_status is not None
        try:
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if wait_status is None:
            wait_status = _exit_status(ctl, None)
    finally:
        os.close(pidfd)
    if sweep:
        sweep_namespace(root)
    shutil.rmtree(scratch, ignore_errors=True)
    latency_ms = (time.perf_counter() - start) * 1000
    if timed_out or not exited:
        result = {
            "status": ToolStatus.TIMEOUT,
            "output": "",
            "error": f"wall-time limit ({limits['wall_seconds']} s) exceeded",
        }
    elif data:
        result = parse_child_result(data, limits["max_output_chars"]) or {
            "status": ToolStatus.ERROR,
            "output": "",
            "error": "sandbox: the tool process sent a malformed result",
        }
    elif os.WIFSIGNALED(wait_status) and os.WTERMSIG(wait_status) in (
        signal.SIGXCPU,
        signal.SIGKILL,
    ):
        result = {
            "status": ToolStatus.TIMEOUT,
            "output": "",
            "error": f"CPU-time limit ({limits['cpu_seconds']} s) exceeded",
        }
    elif os.WIFSIGNALED(wait_status):
        sig = signal.Signals(os.WTERMSIG(wait_status)).name
        result = {
            "status": ToolStatus.ERROR,
            "output": "",
            "error": f"tool process killed by {sig}",
        }
    else:
        result = {
            "status": ToolStatus.ERROR,
            "output": "",
            "error": "tool process exited without a result",
        }
    result["latency_ms"] = round(latency_ms, 3)
    return result


def _serve(line: bytes, limits: dict[str, Any], root: str, sweep: bool, ctl) -> str:
    """One request line in, one reply line out."""
    try:
        request = json.loads(line)
        call_id = request["id"]
        if not isinstance(request.get("tool"), str) or not isinstance(request.get("input"), str):
            raise ValueError("tool and input must be strings")
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        return json.dumps(
            {"id": None, "status": ToolStatus.ERROR, "output": "", "error": "bad request"}
        )
    request = {"tool": request["tool"], "input": request["input"]}
    result = execute(request, limits, root, sweep, ctl)
    result["id"] = call_id
    return json.dumps(result)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def run(init: dict[str, Any], ctl: socket.socket, out_fd: int) -> None:
    """The supervisor's life: wait for the zygote's hello, then serve requests until EOF."""
    limits = init["limits"]
    sweep = init.get("isolation") == "bwrap"
    # process mode: the parent made (and will remove) the scratch root; bwrap: a private tmpfs
    root = init.get("root") or tempfile.mkdtemp(prefix="spark-sandbox-")
    os.chmod(root, 0o711)
    hello = ctl.recv(1 << 20)
    if not hello.startswith(b"ready "):
        return
    write_all(out_fd, hello[6:] + b"\n")
    stdin = os.fdopen(0, "rb", buffering=1 << 16)
    for line in stdin:
        write_all(out_fd, _serve(line, limits, root, sweep, ctl).encode() + b"\n")
