"""The call's lockdown: hardening applied inside each forked sandbox child, before any
model-written text runs.

Under ``bwrap`` isolation the worker already lives in its own user, PID, network, IPC, UTS and
mount namespaces (see ``bwrap.py``); these layers come on top, and in ``process`` mode they are
all there is. Outermost first: a new session and process group; new network and SysV IPC
namespaces where the OS allows it (process mode, as root); resource limits on CPU time,
address space, file size, open files and processes; as root, a drop to a uid of the call's own
(no other process has it, so signals, ``ptrace`` and ``/proc/PID`` of every other process are
refused by the kernel); ``oom_score_adj`` 1000 (the call, not the worker, is what the kernel
kills when the memory cgroup is full); a seccomp filter (``seccomp.py``) that denies processes,
threads, exec, signals, sockets, device nodes, namespaces, SysV IPC and cross-process memory
access in the kernel; blocked modules dropped from ``sys.modules``; and last a Python audit
hook (``audit.py``, holding its own references), a tripwire that names what was refused:
writes outside the scratch directory, ``chdir`` out of it, reads of other processes' ``/proc``
entries and credential files, and the introspection (``gc``, trace functions, ``__code__``
swaps) that could reach the hook itself.
"""

from __future__ import annotations

import ctypes
import os
import resource
import signal
import sys

from spark_core.tools import seccomp
from spark_core.tools.audit import drop_blocked_modules, make_audit_hook

CLONE_NEWNET, CLONE_NEWIPC = 0x40000000, 0x08000000
NOBODY = 65534
PR_SET_PDEATHSIG, PR_SET_DUMPABLE = 1, 4


class SandboxViolation(PermissionError):
    """An operation the sandbox refuses; the call is reported as ``rejected``."""


violations: list[str] = []


def isolate_network() -> str:
    """Move into an empty network namespace and a private SysV IPC namespace (whose objects
    the kernel destroys with the call); report what protection is in force."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.unshare(CLONE_NEWNET | CLONE_NEWIPC) == 0:
            return "network and IPC namespaces"
    except (OSError, AttributeError):
        pass
    return "audit hook only"


def _limit(kind: int, value: int) -> None:
    try:
        resource.setrlimit(kind, (value, value))
    except (ValueError, OSError):
        soft, hard = resource.getrlimit(kind)
        resource.setrlimit(
            kind, (min(value, hard) if hard != resource.RLIM_INFINITY else value, hard)
        )


def _vm_bytes() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def _prefer_as_oom_victim() -> None:
    """When the worker's memory cgroup is full, the kernel kills the call, not the worker:
    ``oom_score_adj`` 1000. Raising it needs no privilege, only ``/proc/self`` entries of the
    process's own uid, so the call is made dumpable (after ``setuid`` they belong to root). It
    stays dumpable — the seccomp filter then refuses ``PR_SET_DUMPABLE`` — which lets it read
    its own memory, as any program may; no other process has its uid (process mode as root),
    or only the worker's own, which never run model-written code (bwrap)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)
    try:
        with open("/proc/self/oom_score_adj", "w") as fh:
            fh.write("1000")
    except OSError:
        pass


def _set_parent_death_signal() -> None:
    """Die with the worker: a call never outlives a worker that was killed mid-call."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def enter(
    scratch: str,
    cpu_seconds: float,
    memory_mb: int,
    file_mb: int,
    open_files: int,
    uid: int = NOBODY,
    parent: int | None = None,
) -> str:
    """Lock this (freshly forked) process down; ``uid`` is used when running as root.
    Returns the protections in force, for the worker's log."""
    os.setsid()
    network = isolate_network()
    cpu = max(1, int(round(cpu_seconds)))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    _limit(resource.RLIMIT_CORE, 0)
    _limit(resource.RLIMIT_AS, _vm_bytes() + memory_mb * 1024 * 1024)
    _limit(resource.RLIMIT_FSIZE, file_mb * 1024 * 1024)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # an oversized write fails, not the process
    os.chdir(scratch)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    out = os.open(os.path.join(scratch, ".stdout"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(out, 1)
    os.dup2(out, 2)
    for fd in (devnull, out):
        if fd > 2:
            os.close(fd)
    if os.geteuid() == 0:
        os.chown(scratch, uid, uid)
        os.chown(os.path.join(scratch, ".stdout"), uid, uid)
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    _set_parent_death_signal()  # after setuid, which clears it
    if parent is not None and os.getppid() != parent:
        os._exit(1)  # the worker died before the signal was armed
    _limit(resource.RLIMIT_NPROC, 0)  # no new processes or threads
    _limit(resource.RLIMIT_NOFILE, open_files)
    os.environ["HOME"] = scratch
    _prefer_as_oom_victim()
    filtered = seccomp.install()
    drop_blocked_modules()
    del violations[:]
    sys.addaudithook(make_audit_hook(os.path.realpath(scratch), violations, SandboxViolation))
    return f"{network}, seccomp {'on' if filtered else 'unavailable'}"
