"""Hardening applied inside each forked sandbox child, before any model-written text runs.

Under ``bwrap`` isolation the worker already lives in its own user, PID, network, IPC, UTS and
mount namespaces (see ``bwrap.py``); these layers come on top, and in ``process`` mode they are
all there is. Outermost first: a new session and process group; a new network namespace where
the OS allows it (process mode, as root); resource limits on CPU time, address space, file size,
open files and processes; as root, a drop to a uid of the call's own (no other process has it,
so signals, ``ptrace`` and ``/proc/PID`` of every other process are refused by the kernel); a
seccomp filter (``seccomp.py``) that denies processes, threads, exec, signals, sockets, device
nodes, namespaces and cross-process memory access in the kernel; and last a Python audit hook,
a tripwire that names what was refused: writes outside the scratch directory, ``chdir`` out of
it, reads of other processes' ``/proc`` entries and credential files, and the introspection
(``gc``, trace functions, ``__code__`` swaps) that could reach the hook itself.
"""

from __future__ import annotations

import ctypes
import os
import resource
import signal
import sys

from spark_core.tools import seccomp

CLONE_NEWNET = 0x40000000
NOBODY = 65534
PR_SET_PDEATHSIG = 1
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_BLOCKED_PREFIXES = (
    "socket.",
    "subprocess.",
    "os.system",
    "os.exec",
    "os.posix_spawn",
    "os.spawn",
    "os.fork",
    "os.forkpty",
    "os.kill",
    "os.killpg",
    "os.putenv",
    "os.unsetenv",
    "ctypes.",
    "pty.",
    "signal.pthread_kill",
    "urllib.Request",
    "http.client.",
    "ftplib.",
    "smtplib.",
    "poplib.",
    "imaplib.",
    "nntplib.",
    "telnetlib.",
    "webbrowser.",
    "sys.remote_exec",
    "winreg.",
    "gc.get_objects",
    "gc.get_referrers",
    "gc.get_referents",
    "sys.settrace",
    "sys.setprofile",
    "sys._current_frames",
    "os.mkfifo",
    "os.mknod",
    "sqlite3.",
)
_BLOCKED_IMPORTS = {
    "ctypes",
    "_ctypes",
    "_posixsubprocess",
    "multiprocessing",
    "pty",
    "_multiprocessing",
    "_posixshmem",  # shm_open creates files in /dev/shm without an audit event
    "sqlite3",
    "_sqlite3",
    "dbm",
    "_dbm",
    "_gdbm",
}
_PATH_EVENTS = {
    "os.remove": (0,),
    "os.rename": (0, 1),
    "os.rmdir": (0,),
    "os.mkdir": (0,),
    "os.chmod": (0,),
    "os.chown": (0,),
    "os.link": (0, 1),
    "os.symlink": (0, 1),
    "os.truncate": (0,),
    "os.utime": (0,),
    "shutil.rmtree": (0,),
    "shutil.copyfile": (1,),
    "shutil.copytree": (1,),
    "shutil.move": (0, 1),
    "os.chroot": (0,),
}
_SECRET_PATHS = (
    "/.env",
    "/.netrc",
    "/.aws/",
    "/.ssh/",
    "/.config/",
    "/.git-credentials",
    "/.docker/",
    "/.kube/",
    "/.huggingface/",
    "/.cache/huggingface/token",
)


class SandboxViolation(PermissionError):
    """An operation the sandbox refuses; the call is reported as ``rejected``."""


violations: list[str] = []


def isolate_network() -> str:
    """Move into an empty network namespace; report what protection is in force."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.unshare(CLONE_NEWNET) == 0:
            return "network namespace"
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


def _resolve(path: object) -> str | None:
    """The absolute, symlink-free path that an event names, against the *current* directory."""
    if isinstance(path, int):
        return None  # an already-open file descriptor
    if isinstance(path, os.PathLike):
        path = os.fspath(path)
    if isinstance(path, bytes):
        path = path.decode(errors="replace")
    if not isinstance(path, str):
        return None
    return os.path.realpath(os.path.join(os.getcwd(), path))


def _inside(path: str, scratch: str) -> bool:
    return path == scratch or path.startswith(scratch + os.sep)


def make_audit_hook(scratch: str, found: list[str]):
    """The hook closes over everything it uses: rebinding this module's globals from inside
    the sandbox (``guard._refuse = ...``) changes nothing it does."""
    own_proc = f"/proc/{os.getpid()}"
    blocked_prefixes, blocked_imports = _BLOCKED_PREFIXES, frozenset(_BLOCKED_IMPORTS)
    path_events, secret_paths, write_flags = dict(_PATH_EVENTS), _SECRET_PATHS, _WRITE_FLAGS
    resolve, inside, isdir, error = _resolve, _inside, os.path.isdir, SandboxViolation

    def refuse(what: str) -> None:
        found.append(what)
        raise error(f"sandbox: {what} is not allowed")

    def hook(event: str, args: tuple) -> None:
        if event.startswith(blocked_prefixes):
            refuse(event)
        if event == "import" and args and str(args[0]).split(".")[0] in blocked_imports:
            refuse(f"import {args[0]}")
        if event == "object.__setattr__" and len(args) > 1 and args[1] == "__code__":
            refuse("replacing a function's code")
        if event == "os.chdir" and args:
            path = resolve(args[0])
            if path is None or not inside(path, scratch):
                refuse(f"chdir to {args[0]!r}")
        if event == "open" and args:
            path = resolve(args[0])
            if path is None:
                return
            mode = args[1] if len(args) > 1 and isinstance(args[1], str) else ""
            flags = args[2] if len(args) > 2 and isinstance(args[2], int) else 0
            writing = any(c in mode for c in "wax+") or bool(flags & write_flags)
            if not inside(path, scratch):
                if writing:
                    refuse(f"writing {path}")
                if isdir(path):  # a directory fd would let a dir_fd= call write anywhere
                    refuse(f"opening directory {path}")
            if path.startswith("/proc/") and path.split("/")[2].isdigit():
                if not (path == own_proc or path.startswith(own_proc + "/")):
                    refuse(f"reading {path}")
            if any(marker in path for marker in secret_paths):
                refuse(f"reading {path}")
        if event in path_events:
            for i in path_events[event]:
                if i < len(args):
                    path = resolve(args[i])
                    if path is not None and not inside(path, scratch):
                        refuse(f"{event} on {path}")

    return hook


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
    filtered = seccomp.install()
    del violations[:]
    sys.addaudithook(make_audit_hook(os.path.realpath(scratch), violations))
    return f"{network}, seccomp {'on' if filtered else 'unavailable'}"
