"""The sandbox worker: started with a scrubbed environment (inside bubblewrap under ``bwrap``
isolation), it becomes two processes. The *zygote* (this module) imports every tool's
libraries and forks one fresh, locked-down child per call; it never reads a request or a
result, so nothing of an earlier call is in the memory a call inherits. The *supervisor*
(``supervisor.py``), forked before those imports, owns the protocol and supervises each call.

Protocol on stdin/stdout, one JSON object per line: first ``{"limits":…, "config":…, "root":…}``
(the worker answers ``{"ready": true, …}``), then ``{"id": n, "tool": name, "input": text}``
requests, each answered by a ToolResult dict that carries the same ``id``. The child never sees
the protocol: it reads its own request from a pipe and holds only the write end of its result
pipe; the supervisor validates what comes back. Run with ``python -m spark_core.tools.worker``.
"""

from __future__ import annotations

import gc
import json
import os
import resource
import signal
import socket
import sys
from typing import Any

from spark_core.tools import supervisor
from spark_core.tools.base import ToolStatus
from spark_core.tools.supervisor import clean_text, parse_child_result  # noqa: F401 - re-exported

RESULT_LIMIT_BYTES = supervisor.RESULT_LIMIT_BYTES
CALL_UID_BASE = 1_000_000_000  # process mode as root: call uid = base + worker pid
PR_SET_PDEATHSIG, PR_SET_DUMPABLE = 1, 4

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
    status, output, error = ToolStatus.ERROR, "", ""
    try:
        from spark_core.tools import lockdown
        from spark_core.tools.base import Rejected, ToolError
        from spark_core.tools.registry import get_tool

        tool_name, text = request["tool"], request["input"]
        del request  # nothing of the protocol stays reachable from the tool's frames
        tool = get_tool(tool_name)
        lockdown.enter(
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
            status = ToolStatus.OK
        except lockdown.SandboxViolation as exc:
            status, error = ToolStatus.REJECTED, str(exc)
        except Rejected as exc:
            status, error = ToolStatus.REJECTED, str(exc)
        except ToolError as exc:
            error = str(exc)
        except MemoryError:
            error = f"MemoryError: memory limit ({limits['memory_mb']} MB) exceeded"
        except RecursionError:
            error = "RecursionError: expression or program nested too deeply"
        except BaseException as exc:  # model-written code can raise anything
            error = f"{type(exc).__name__}: {exc}"
        if lockdown.violations and status != ToolStatus.REJECTED:
            status, error = ToolStatus.REJECTED, f"sandbox: {lockdown.violations[0]} is not allowed"
    except BaseException as exc:  # failure while entering the sandbox itself
        error = f"sandbox setup failed: {type(exc).__name__}: {exc}"
    cap = limits["max_output_chars"]
    if len(output) > cap:
        output = output[:cap] + f"\n[truncated {len(output) - cap} characters]"
    payload = json.dumps({"status": status, "output": output, "error": error[:cap]}).encode()
    os.write(write_fd, payload[:RESULT_LIMIT_BYTES])


def _prctl(option: int, value: int) -> None:
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0)


def _read_request(fd: int) -> dict[str, Any]:
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    os.close(fd)
    return json.loads(b"".join(chunks))


def _fork_call(ctl: socket.socket, limits: dict[str, Any]) -> bool:
    """Fork the child of one call and report it to the supervisor; False when it is gone."""
    try:
        message, fds, _, _ = socket.recv_fds(ctl, 4096, 2)
    except OSError:
        return False
    if not message.startswith(b"call ") or len(fds) != 2:
        for fd in fds:
            os.close(fd)
        return False
    scratch, (req_r, res_w) = message[5:].decode(), fds
    pid = os.fork()
    if pid == 0:
        try:
            ctl.close()
            _child(_read_request(req_r), limits, scratch, res_w)
        finally:
            os._exit(0)
    os.close(req_r)
    os.close(res_w)
    pidfd = os.pidfd_open(pid)
    try:
        socket.send_fds(ctl, [b"pid"], [pidfd])
    finally:
        os.close(pidfd)
    _, status = os.waitpid(pid, 0)
    ctl.send(b"exit %d" % status)
    return True


def _start_supervisor(init: dict[str, Any], out_fd: int) -> socket.socket:
    """Fork the supervisor now, while this process is small and has read nothing but the init
    line; afterwards the zygote holds neither end of the protocol."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            ours.close()
            _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # process mode: not without the zygote
            if os.getppid() == init["limits"]["worker_pid"]:
                supervisor.run(init, theirs, out_fd)
                code = 0
        finally:
            os._exit(code)
    theirs.close()
    os.close(out_fd)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)  # a call's child never inherits the protocol, not even for a moment
    os.close(null)
    return ours


def main() -> None:
    # the protocol owns the original stdout; anything a library prints goes to stderr
    out_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    sys.dont_write_bytecode = True
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # the worker never outlives its Sandbox
    _prctl(PR_SET_DUMPABLE, 0)  # a child of the same uid cannot ptrace it or open its /proc
    line = b""
    while not line.endswith(b"\n"):  # unbuffered: the rest of stdin is the supervisor's
        byte = os.read(0, 1)
        if not byte:
            return
        line += byte
    init = json.loads(line)
    limits, config = init["limits"], init.get("config", {})
    limits["worker_pid"] = os.getpid()
    limits["call_uid"] = CALL_UID_BASE + os.getpid() if os.geteuid() == 0 else os.geteuid()
    ctl = _start_supervisor(init, out_fd)
    del init, line
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
    from spark_core.tools import audit, lockdown  # noqa: F401 - imported once here, not per call

    audit.find_references()  # where the blocked modules are held, found once
    hello = {"ready": True, "pid": os.getpid(), "tools": sorted(discover())}
    ctl.send(b"ready " + json.dumps(hello).encode())
    # the cyclic GC of a call's child would walk (and so copy-on-write) the whole inherited
    # heap: what the zygote holds now is never collected in a call
    gc.freeze()
    while _fork_call(ctl, limits):
        pass


if __name__ == "__main__":
    main()
