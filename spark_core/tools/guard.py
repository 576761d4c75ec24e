"""Hardening applied inside each forked sandbox child, before any model-written text runs.

Layers, outermost first: a new network namespace (no interfaces, so no network) where the OS
allows it; resource limits on CPU time, address space, file size, open files and processes;
when started as root, a drop to the unprivileged ``nobody`` user; and a Python audit hook that
refuses process creation, sockets, ctypes, signals to other processes, writes outside the
scratch directory and reads of other processes' ``/proc`` entries or credential files. Where the
namespace cannot be created (no privileges), the audit hook and the process limit are what
keep the network and other processes out of reach.
"""

from __future__ import annotations

import ctypes
import os
import resource
import signal
import sys

CLONE_NEWNET = 0x40000000
NOBODY = 65534
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
)
_BLOCKED_IMPORTS = {
    "ctypes",
    "_ctypes",
    "_posixsubprocess",
    "multiprocessing",
    "pty",
    "_multiprocessing",
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


def _resolve(path: object, scratch: str) -> str | None:
    if isinstance(path, int):
        return None  # an already-open file descriptor
    if isinstance(path, os.PathLike):
        path = os.fspath(path)
    if isinstance(path, bytes):
        path = path.decode(errors="replace")
    if not isinstance(path, str):
        return None
    return os.path.realpath(os.path.join(scratch, path))


def _inside(path: str, scratch: str) -> bool:
    return path == scratch or path.startswith(scratch + os.sep)


def _refuse(what: str) -> None:
    violations.append(what)
    raise SandboxViolation(f"sandbox: {what} is not allowed")


def make_audit_hook(scratch: str):
    own_proc = f"/proc/{os.getpid()}"

    def hook(event: str, args: tuple) -> None:
        if event.startswith(_BLOCKED_PREFIXES):
            _refuse(event)
        if event == "import" and args and str(args[0]).split(".")[0] in _BLOCKED_IMPORTS:
            _refuse(f"import {args[0]}")
        if event == "open" and args:
            path = _resolve(args[0], scratch)
            if path is None:
                return
            mode = args[1] if len(args) > 1 and isinstance(args[1], str) else ""
            flags = args[2] if len(args) > 2 and isinstance(args[2], int) else 0
            writing = any(c in mode for c in "wax+") or bool(flags & _WRITE_FLAGS)
            if writing and not _inside(path, scratch):
                _refuse(f"writing {path}")
            if path.startswith("/proc/") and path.split("/")[2].isdigit():
                if not (path == own_proc or path.startswith(own_proc + "/")):
                    _refuse(f"reading {path}")
            if any(marker in path for marker in _SECRET_PATHS):
                _refuse(f"reading {path}")
        if event in _PATH_EVENTS:
            for i in _PATH_EVENTS[event]:
                if i < len(args):
                    path = _resolve(args[i], scratch)
                    if path is not None and not _inside(path, scratch):
                        _refuse(f"{event} on {path}")

    return hook


def enter(scratch: str, cpu_seconds: float, memory_mb: int, file_mb: int, open_files: int) -> str:
    """Lock this (freshly forked) process down. Returns the network protection in force."""
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
    if os.geteuid() == 0:
        os.chown(scratch, NOBODY, NOBODY)
        os.chown(os.path.join(scratch, ".stdout"), NOBODY, NOBODY)
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
    _limit(resource.RLIMIT_NPROC, 0)  # no new processes or threads
    _limit(resource.RLIMIT_NOFILE, open_files)
    os.environ["HOME"] = scratch
    sys.addaudithook(make_audit_hook(os.path.realpath(scratch)))
    return network
