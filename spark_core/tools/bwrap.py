"""The bubblewrap command line that a sandbox worker runs under (``tools.isolation: bwrap``).

What the worker sees: new user, PID, network, IPC, UTS and cgroup namespaces; read-only binds
of only the system libraries, the Python installation, this package and the knowledge corpus
(no home, no project checkout, no ``/run`` sockets); its own ``/proc`` and a minimal ``/dev``;
a private, size-limited tmpfs on ``/tmp`` (scratch, the only writable place) and none of the
host's ``/tmp`` or ``/dev/shm``; no capabilities, uid/gid ``nobody``, a new session, and
death with its parent. The worker is PID 1 of its namespace: no bwrap init process, whose
``/proc/1/fd`` would hold the protocol pipes, shares the namespace with a call.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

INSTALL_HINT = "sudo apt-get install bubblewrap"
SANDBOX_UID = 65534
TMPFS_BYTES = 256 * 1024 * 1024
_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_ETC_FILES = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime")


class BwrapUnavailable(RuntimeError):
    """``tools.isolation`` is ``bwrap`` but bubblewrap cannot be used here."""


def find_bwrap() -> str:
    path = shutil.which("bwrap")
    if path is None:
        raise BwrapUnavailable(
            "tools.isolation is 'bwrap' but bubblewrap is not installed. Install it "
            f"(`{INSTALL_HINT}`, or `make install` as root), or set tools.isolation: process "
            "to accept the weaker process-level sandbox."
        )
    return path


def _python_roots() -> list[str]:
    """Directories the interpreter and its packages load from; never one that holds the
    checkout itself (its ``.env``, runs and git history stay out of reach)."""
    package = Path(__file__).resolve().parents[1]
    roots = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    for entry in sys.path:
        real = os.path.realpath(entry) if entry else ""
        if real and os.path.isdir(real) and "site-packages" in real:
            roots.add(real)
    roots.add(os.path.dirname(os.path.realpath(sys.executable)))
    checkout = str(package.parent)
    return sorted(r for r in roots if r != checkout and not checkout.startswith(r + os.sep))


def _minimal(paths: list[str]) -> list[str]:
    kept: list[str] = []
    for path in sorted(set(paths)):
        if not any(path == k or path.startswith(k.rstrip("/") + "/") for k in kept):
            kept.append(path)
    return kept


def command(
    worker: list[str], corpus: str | None = None, tmpfs_bytes: int = TMPFS_BYTES
) -> list[str]:
    """``bwrap … -- worker``; ``corpus`` is a local file to expose read-only, if any;
    ``tmpfs_bytes`` the size of the private ``/tmp`` (``tools.memory_mb``)."""
    package = str(Path(__file__).resolve().parents[1])  # …/spark_core, without the checkout
    args = [
        find_bwrap(),
        "--unshare-all",
        "--unshare-user",
        "--uid", str(SANDBOX_UID),
        "--gid", str(SANDBOX_UID),
        "--cap-drop", "ALL",
        "--die-with-parent",
        "--as-pid-1",  # no bwrap init holding the protocol pipes in the namespace
        "--new-session",
        "--hostname", "spark-sandbox",
        "--proc", "/proc",
        "--dev", "/dev",
        "--size", str(tmpfs_bytes), "--tmpfs", "/tmp",
        "--dir", "/var/tmp",
        "--chdir", "/tmp",
    ]  # fmt: skip
    for path in _SYSTEM_DIRS:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    for path in _ETC_FILES:
        if os.path.exists(path):
            args += ["--ro-bind", path, path]
    binds = [package, *_python_roots()]
    if corpus and corpus != "bundled" and "://" not in corpus and os.path.exists(corpus):
        binds.append(os.path.realpath(corpus))
    for path in _minimal([p for p in binds if not p.startswith(_SYSTEM_DIRS)]):
        args += ["--ro-bind", path, path]
    # bwrap's own root and /dev are tmpfs: read-only, so /tmp (size-capped) is all that is
    # writable, and the worker empties it after every call
    args += ["--remount-ro", "/dev", "--remount-ro", "/"]
    return [*args, "--", *worker]
