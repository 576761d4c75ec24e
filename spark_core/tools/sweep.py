"""What the worker clears after every call under bwrap: processes, files and SysV IPC objects
left in its private namespaces.

Between calls the worker's PID namespace holds the worker (PID 1, ``--as-pid-1``) and the
process that sweeps, its private ``/tmp`` only the empty scratch root, and its private IPC
namespace nothing. Whatever else is there outlived its call: the call has the worker's uid, so
it could write there. The seccomp filter already refuses SysV IPC; removing any object that
exists anyway keeps a gap in the filter from becoming memory that outlives the call or a
channel to the next call.
"""

from __future__ import annotations

import os
import shutil
import signal

IPC_RMID = 0
_IPC_TABLES = (("shm", "shmctl"), ("msg", "msgctl"), ("sem", "semctl"))


def kill_strays(keep: tuple[int, ...]) -> None:
    """SIGKILL every process of this PID namespace but ``keep`` and PID 1."""
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) not in (1, *keep):
            try:
                os.kill(int(entry), signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def ipc_objects() -> dict[str, list[int]]:
    """The ids of every SysV shared-memory segment, queue and semaphore set in this IPC
    namespace (``/proc/sysvipc``: a header line, then the id in the second column)."""
    found: dict[str, list[int]] = {}
    for table, _ in _IPC_TABLES:
        try:
            with open(f"/proc/sysvipc/{table}") as fh:
                rows = fh.read().splitlines()[1:]
        except OSError:
            rows = []
        found[table] = [int(row.split()[1]) for row in rows if len(row.split()) > 1]
    return found


def remove_ipc() -> int:
    """``IPC_RMID`` every object of this IPC namespace; the number removed."""
    found = ipc_objects()
    if not any(found.values()):
        return 0
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    removed = 0
    for (table, call), ids in zip(_IPC_TABLES, found.values(), strict=True):
        control = getattr(libc, call)
        for ident in ids:
            args = (ident, 0, IPC_RMID, 0) if table == "sem" else (ident, IPC_RMID, None)
            removed += control(*args) == 0
    return removed


def clear_tmp(root: str) -> None:
    """Empty ``root``'s parent (the private ``/tmp``) and ``root`` itself, keeping ``root``."""
    os.chmod(root, 0o711)
    for parent in (os.path.dirname(root), root):
        for entry in os.listdir(parent):
            path = os.path.join(parent, entry)
            if path == root:
                continue
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.unlink(path)


def sweep(root: str) -> None:
    """Processes first (nothing may recreate what is removed next), then files and IPC."""
    kill_strays(keep=(os.getpid(),))
    clear_tmp(root)
    remove_ipc()
