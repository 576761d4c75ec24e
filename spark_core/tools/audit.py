"""The Python audit hook of the sandbox child: a tripwire that names what was refused.

It runs in the same interpreter as the code it watches, so it must not depend on anything that
code can change. Every function, builtin and table it uses is bound at install time as a
default argument (immutable tuples and frozensets, no closure cells — a cell's contents can be
rebound without an audit event), path resolution is its own (``posixpath.realpath`` and
``os.path`` are not consulted), and rebinding the defaults or the code of its own functions is
refused. Blocked modules are also dropped from ``sys.modules`` (and from every module that
holds them) before the hook goes in, so an import of one fires the ``import`` event.
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Callable
from types import BuiltinFunctionType

BLOCKED_PREFIXES = (
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
BLOCKED_IMPORTS = frozenset(
    {
        "ctypes",
        "_ctypes",
        "cffi",  # raw syscalls without a single audit event
        "_cffi_backend",
        "_posixsubprocess",  # fork_exec raises no audit event (subprocess.Popen does)
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
)
PATH_EVENTS = (
    ("os.remove", (0,)),
    ("os.rename", (0, 1)),
    ("os.rmdir", (0,)),
    ("os.mkdir", (0,)),
    ("os.chmod", (0,)),
    ("os.chown", (0,)),
    ("os.link", (0, 1)),
    ("os.symlink", (0, 1)),
    ("os.truncate", (0,)),
    ("os.utime", (0,)),
    ("shutil.rmtree", (0,)),
    ("shutil.copyfile", (1,)),
    ("shutil.copytree", (1,)),
    ("shutil.move", (0, 1)),
    ("os.chroot", (0,)),
)
SECRET_PATHS = (
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
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_MAX_LINKS = 40  # the kernel's own limit (ELOOP)


def realpath(
    path: str,
    _lstat=os.lstat,
    _readlink=os.readlink,
    _getcwd=os.getcwd,
    _islink=stat.S_ISLNK,
    _oserror=OSError,
    _max_links=_MAX_LINKS,
) -> str:
    """The absolute, symlink-free form of ``path`` against the current directory, built from
    ``lstat``/``readlink`` alone. A chain longer than the kernel follows gives ``""`` (outside
    every directory: the caller refuses)."""
    if not path.startswith("/"):
        path = _getcwd() + "/" + path
    pending = path.split("/")[::-1]
    resolved: list[str] = []
    links = 0
    while pending:
        part = pending.pop()
        if part in ("", "."):
            continue
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = "/" + "/".join([*resolved, part])
        try:
            mode = _lstat(candidate).st_mode
        except _oserror:
            resolved.append(part)
            continue
        if not _islink(mode):
            resolved.append(part)
            continue
        links += 1
        if links > _max_links:
            return ""
        try:
            target = _readlink(candidate)
        except _oserror:  # a link the kernel will not show (another process's /proc/PID/fd)
            resolved.append(part)
            continue
        if target.startswith("/"):
            resolved = []
        pending.extend(target.split("/")[::-1])
    return "/" + "/".join(resolved)


def resolve(
    path: object,
    _realpath=realpath,
    _isinstance=isinstance,
    _str=str,
    _bytes=bytes,
    _int=int,
) -> str | None:
    """The path an event names, resolved; None for a descriptor. A path-like object is not
    asked for its path (that would run its code inside the hook): it resolves to ``""``."""
    if _isinstance(path, _int):
        return None
    if _isinstance(path, _bytes):
        path = path.decode(errors="replace")
    if not _isinstance(path, _str):
        return ""
    return _realpath(path)


def is_dir(path: str, _stat=os.stat, _isdir=stat.S_ISDIR, _oserror=OSError) -> bool:
    try:
        return _isdir(_stat(path).st_mode)
    except _oserror:
        return False


def make_audit_hook(scratch: str, found: list[str], error: type[Exception]) -> Callable:
    """The hook for a call whose only writable place is ``scratch``; it appends what it
    refused to ``found`` and raises ``error``."""
    own_proc = f"/proc/{os.getpid()}"

    def hook(
        event: str,
        args: tuple,
        _scratch=scratch,
        _scratch_dir=scratch + "/",
        _own_proc=own_proc,
        _own_proc_dir=own_proc + "/",
        _found=found,
        _error=error,
        _prefixes=BLOCKED_PREFIXES,
        _imports=BLOCKED_IMPORTS,
        _path_events=PATH_EVENTS,
        _secret_paths=SECRET_PATHS,
        _write_flags=_WRITE_FLAGS,
        _resolve=resolve,
        _is_dir=is_dir,
        _protected=None,
        _isinstance=isinstance,
        _str=str,
        _int=int,
        _len=len,
        _id=id,
        _bool=bool,
    ) -> None:
        what = None
        if event.startswith(_prefixes):
            what = event
        elif event == "import" and args and _str(args[0]).split(".")[0] in _imports:
            what = f"import {args[0]}"
        elif event == "object.__setattr__" and _len(args) > 1:
            if args[1] == "__code__":
                what = "replacing a function's code"
            elif _protected is not None and _id(args[0]) in _protected:
                what = "changing the audit hook"
        elif event in ("os.listdir", "os.scandir") and args:
            path = _resolve(args[0])
            if path is not None and path.startswith("/proc/") and path.split("/")[2].isdigit():
                if not (path == _own_proc or path.startswith(_own_proc_dir)):
                    what = f"listing {path}"
        elif event in ("os.chdir", "open") and args:
            path = _resolve(args[0])
            if event == "os.chdir":
                if path is None or not (path == _scratch or path.startswith(_scratch_dir)):
                    what = f"chdir to {args[0]!r}"
            elif path is not None:
                mode = args[1] if _len(args) > 1 and _isinstance(args[1], _str) else ""
                flags = args[2] if _len(args) > 2 and _isinstance(args[2], _int) else 0
                writing = "w" in mode or "a" in mode or "x" in mode or "+" in mode
                writing = writing or _bool(flags & _write_flags)
                if not (path == _scratch or path.startswith(_scratch_dir)):
                    if writing:
                        what = f"writing {path}"
                    elif _is_dir(path):  # a directory fd would let a dir_fd= call write anywhere
                        what = f"opening directory {path}"
                if what is None and path.startswith("/proc/") and path.split("/")[2].isdigit():
                    if not (path == _own_proc or path.startswith(_own_proc_dir)):
                        what = f"reading {path}"
                if what is None:
                    for marker in _secret_paths:
                        if marker in path:
                            what = f"reading {path}"
                            break
        else:
            for name, positions in _path_events:
                if event == name:
                    for i in positions:
                        if i < _len(args):
                            path = _resolve(args[i])
                            if path is not None and not (
                                path == _scratch or path.startswith(_scratch_dir)
                            ):
                                what = f"{event} on {path}"
                                break
                    break
        if what is not None:
            _found.append(what)
            raise _error(f"sandbox: {what} is not allowed")

    protected = frozenset(id(f) for f in (hook, realpath, resolve, is_dir))
    defaults = list(hook.__defaults__)
    defaults[hook.__code__.co_varnames.index("_protected") - 2] = protected
    hook.__defaults__ = tuple(defaults)
    return hook


# C modules whose functions raise no audit event: a function of theirs that another module
# holds (``subprocess._fork_exec``) goes too. ctypes' dangerous calls raise events of their own.
_UNAUDITED = frozenset({"_posixsubprocess", "_cffi_backend", "_posixshmem", "_multiprocessing"})
_references: list[tuple[str, str]] | None = None


def find_references(blocked: frozenset[str] = BLOCKED_IMPORTS) -> list[tuple[str, str]]:
    """Every (module, attribute) that holds a blocked module or one of its C functions
    (``subprocess._fork_exec`` is ``_posixsubprocess.fork_exec``). Called once in the worker after
    its imports: scanning every module's namespace in each call would touch (and so copy) the
    whole inherited heap."""
    global _references
    doomed = {id(m) for name, m in sys.modules.items() if name.split(".")[0] in blocked}
    unaudited = {id(m) for name, m in sys.modules.items() if name in _UNAUDITED}
    found = []
    for name, module in list(sys.modules.items()):
        namespace = getattr(module, "__dict__", None)
        if isinstance(namespace, dict):
            for key, value in namespace.items():
                owner = value.__self__ if isinstance(value, BuiltinFunctionType) else None
                if id(value) in doomed or id(owner) in unaudited:
                    found.append((name, key))
    _references = found
    return found


def drop_blocked_modules(blocked: frozenset[str] = BLOCKED_IMPORTS) -> list[str]:
    """Remove every blocked module (and submodule) the worker had loaded from ``sys.modules``,
    and every module attribute that refers to one, so that reaching one takes an ``import``
    — which the hook refuses. Returns the names removed."""
    references = find_references(blocked) if _references is None else _references
    for name, key in references:
        module = sys.modules.get(name)
        if module is not None and name.split(".")[0] not in blocked:
            setattr(module, key, None)
    names = [name for name in sys.modules if name.split(".")[0] in blocked]
    for name in names:
        del sys.modules[name]
    return names
