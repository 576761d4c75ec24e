"""One memory cgroup per sandbox worker: a single cap on everything a call can allocate.

Why: rlimits count one mechanism each (``RLIMIT_AS`` anonymous memory, the tmpfs its size,
``RLIMIT_FSIZE`` one file), so a call could add them up, and SysV shared memory or a memfd
counted against none. A memory cgroup charges every page — anonymous, tmpfs, memfd, shared
memory, page tables — to the worker, whatever the mechanism, and its ``pids`` limit caps the
tasks. The worker's cgroup is capped at the worker's own footprint (measured when it is ready)
plus ``tools.memory_mb``, so ``memory_mb`` is what one call can allocate in all; when the cap
is reached the kernel kills the call (its ``oom_score_adj`` is 1000, see ``lockdown.py``).

Where: a cgroup v2 subtree the process may write (delegated, or as root with the ``memory``
controller enabled below its own cgroup), else the cgroup v1 ``memory`` (and ``pids``)
hierarchy below the process's own cgroup, which root can write. Where neither works the
sandbox logs a warning and the rlimits are the only caps.
"""

from __future__ import annotations

import itertools
import os
import signal
import time
from dataclasses import dataclass, field

ROOT = "/sys/fs/cgroup"
PREFIX = "spark-sandbox-"
TASKS_MAX = 32  # bwrap, the zygote, a call process, its tool child, a janitor: 5 at most
_counter = itertools.count()


@dataclass
class WorkerCgroup:
    """The cgroup directories of one worker: ``memory`` (v1 or v2) and, v1, ``pids``."""

    version: int
    memory: str
    pids: str | None = None
    dirs: list[str] = field(default_factory=list)

    def procs_files(self) -> list[str]:
        return [os.path.join(d, "cgroup.procs") for d in self.dirs]

    def _read(self, name: str) -> str:
        with open(os.path.join(self.memory, name)) as fh:
            return fh.read()

    def _write(self, directory: str, name: str, value: str) -> None:
        with open(os.path.join(directory, name), "w") as fh:
            fh.write(value)

    def usage(self) -> int:
        """Bytes charged now (every mechanism, kernel memory included)."""
        name = "memory.current" if self.version == 2 else "memory.usage_in_bytes"
        return int(self._read(name))

    def oom_kills(self) -> int:
        """How many processes the kernel has killed here for the memory cap."""
        text = self._read("memory.events" if self.version == 2 else "memory.oom_control")
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    def cap(self, limit_bytes: int) -> None:
        """Set the memory cap; swap may not take more (there is no way around the cap)."""
        if self.version == 2:
            self._write(self.memory, "memory.max", str(limit_bytes))
            if os.path.exists(os.path.join(self.memory, "memory.swap.max")):
                self._write(self.memory, "memory.swap.max", "0")
            return
        self._write(self.memory, "memory.limit_in_bytes", str(limit_bytes))
        if os.path.exists(os.path.join(self.memory, "memory.memsw.limit_in_bytes")):
            self._write(self.memory, "memory.memsw.limit_in_bytes", str(limit_bytes))

    def holds(self, pid: int) -> bool:
        """Whether ``pid`` is in every directory of the group."""
        for path in self.procs_files():
            try:
                with open(path) as fh:
                    if str(pid) not in fh.read().split():
                        return False
            except OSError:
                return False
        return True

    def remove(self) -> None:
        """Kill whatever is still inside, then remove the directories (the kernel refuses
        while a task is exiting, so retry briefly)."""
        for directory in reversed(self.dirs):
            for attempt in range(100):
                try:
                    os.rmdir(directory)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    _kill_members(directory)
                    time.sleep(0.01 if attempt < 50 else 0.05)


def _kill_members(directory: str) -> None:
    try:
        with open(os.path.join(directory, "cgroup.procs")) as fh:
            pids = [int(line) for line in fh if line.strip()]
    except OSError:
        return
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _own_cgroups() -> dict[str, str]:
    """Controller (``""`` for the v2 hierarchy) -> this process's cgroup path."""
    found = {}
    with open("/proc/self/cgroup") as fh:
        for line in fh:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for controller in controllers.split(",") if controllers else [""]:
                found[controller] = path
    return found


def _remove_stale(parent: str) -> None:
    """Directories an earlier sandbox process left (killed before it could remove them)."""
    try:
        entries = os.listdir(parent)
    except OSError:
        return
    for entry in entries:
        owner = entry[len(PREFIX) :].split("-")[0]
        if entry.startswith(PREFIX) and owner.isdigit() and not os.path.exists(f"/proc/{owner}"):
            try:
                os.rmdir(os.path.join(parent, entry))
            except OSError:
                pass


def _make(parent: str, name: str) -> str:
    _remove_stale(parent)
    path = os.path.join(parent, name)
    os.mkdir(path)
    return path


def _create_v2(path: str, name: str, tasks_max: int) -> WorkerCgroup:
    parent = ROOT + path
    with open(os.path.join(parent, "cgroup.subtree_control")) as fh:
        enabled = fh.read().split()
    if "memory" not in enabled or "pids" not in enabled:
        # refused (EBUSY) while this cgroup holds processes: then it was not delegated for it
        with open(os.path.join(parent, "cgroup.subtree_control"), "w") as fh:
            fh.write("+memory +pids")
    directory = _make(parent, name)
    group = WorkerCgroup(2, directory, directory, [directory])
    group._write(directory, "pids.max", str(tasks_max))
    return group


def _create_v1(own: dict[str, str], name: str, tasks_max: int) -> WorkerCgroup:
    memory = _make(os.path.join(ROOT, "memory") + own["memory"], name)
    group = WorkerCgroup(1, memory, None, [memory])
    pids_root = os.path.join(ROOT, "pids")
    if "pids" in own and os.path.isdir(pids_root):
        try:
            group.pids = _make(pids_root + own["pids"], name)
            group.dirs.append(group.pids)
            group._write(group.pids, "pids.max", str(tasks_max))
        except OSError:
            group.remove()
            raise
    return group


def create(tasks_max: int = TASKS_MAX) -> tuple[WorkerCgroup | None, str]:
    """A fresh cgroup for one worker, not yet capped (the worker is still importing), or None
    and the reason none could be made here."""
    name = f"{PREFIX}{os.getpid()}-{next(_counter)}"
    try:
        own = _own_cgroups()
    except OSError as exc:
        return None, f"cannot read /proc/self/cgroup ({exc})"
    try:
        if os.path.exists(os.path.join(ROOT, "cgroup.controllers")) and "" in own:
            with open(os.path.join(ROOT, "cgroup.controllers")) as fh:
                if "memory" not in fh.read().split():
                    return None, "the cgroup v2 hierarchy has no memory controller"
            return _create_v2(own[""], name, tasks_max), ""
        if "memory" in own and os.path.isdir(os.path.join(ROOT, "memory")):
            return _create_v1(own, name, tasks_max), ""
    except OSError as exc:
        return None, f"cannot create a memory cgroup here ({exc})"
    return None, "no memory cgroup controller is mounted"


def wrap(command: list[str], group: WorkerCgroup) -> list[str]:
    """``command`` started inside ``group``: a shell joins it, then ``exec``s the command, so
    every process the worker ever forks is charged there from its first page. A shell that
    cannot join starts the command anyway; ``holds`` then says so."""
    join = 'for f in "$@"; do [ "$f" = -- ] && break; echo $$ 2>/dev/null > "$f"; shift; done'
    script = f'{join}; shift; exec "$@"'
    return ["/bin/sh", "-c", script, "sh", *group.procs_files(), "--", *command]
