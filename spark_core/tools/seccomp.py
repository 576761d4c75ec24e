"""A seccomp-BPF deny list for the sandbox child, built and installed with ctypes.

Why: the audit hook runs in the same interpreter as the hostile code, so it is a tripwire,
not a boundary. These syscalls fail with ``EPERM`` in the kernel whatever the Python code does:
new processes or threads (``clone``, ``fork``), ``exec``, signals to any process (``kill``,
``tgkill``, ``pidfd_*``), ``ptrace`` and cross-process memory access, sockets, device nodes and
FIFOs (``mknod``), namespaces and mounts, keyrings, ``bpf``, ``perf_event_open``,
``userfaultfd``, ``io_uring`` (whose operations bypass seccomp), and changing another process's
limits, priority, affinity or memory placement; SysV IPC (shared memory, queues, semaphores:
memory no rlimit counts, which outlives the call), file watches (``inotify``, ``fanotify``),
``modify_ldt``, ``personality``, ``kexec_*``, and the ``prctl`` options that would undo the
call's lockdown (``lockdown.py``: ``PR_SET_PDEATHSIG``, ``PR_SET_DUMPABLE``). Supported on
x86_64 and aarch64; elsewhere ``install`` returns False and the caller reports it.
"""

from __future__ import annotations

import ctypes
import errno
import platform
import struct

# syscall numbers: x86_64 from arch/x86/entry/syscalls/syscall_64.tbl, aarch64 from
# include/uapi/asm-generic/unistd.h. From 424 on (Linux 5.1) every architecture shares one table.
_UNIFIED = {
    "pidfd_send_signal": 424,
    "io_uring_setup": 425,
    "io_uring_enter": 426,
    "io_uring_register": 427,
    "pidfd_open": 434,
    "clone3": 435,
    "pidfd_getfd": 438,
}
_DENY = {
    "x86_64": {
        "socket": 41,
        "clone": 56,
        "fork": 57,
        "vfork": 58,
        "execve": 59,
        "kill": 62,
        "ptrace": 101,
        "rt_sigqueueinfo": 129,
        "mknod": 133,
        "pivot_root": 155,
        "chroot": 161,
        "mount": 165,
        "umount2": 166,
        "tkill": 200,
        "tgkill": 234,
        "add_key": 248,
        "request_key": 249,
        "keyctl": 250,
        "mknodat": 259,
        "unshare": 272,
        "rt_tgsigqueueinfo": 297,
        "perf_event_open": 298,
        "name_to_handle_at": 303,
        "open_by_handle_at": 304,
        "setns": 308,
        "process_vm_readv": 310,
        "process_vm_writev": 311,
        "kcmp": 312,
        "bpf": 321,
        "execveat": 322,
        "userfaultfd": 323,
        **_UNIFIED,
        "setpriority": 141,
        "sched_setparam": 142,
        "sched_setscheduler": 144,
        "sched_setaffinity": 203,
        "ioprio_set": 251,
        "migrate_pages": 256,
        "move_pages": 279,
        "sched_setattr": 314,
        "process_madvise": 440,
        # SysV IPC: its memory is charged to no rlimit and outlives the call
        "shmget": 29,
        "shmat": 30,
        "shmctl": 31,
        "semget": 64,
        "semop": 65,
        "semctl": 66,
        "shmdt": 67,
        "msgget": 68,
        "msgsnd": 69,
        "msgrcv": 70,
        "msgctl": 71,
        "semtimedop": 220,
        # nothing a tool needs: file watches, LDT, execution domains, kernel replacement
        "personality": 135,
        "modify_ldt": 154,
        "kexec_load": 246,
        "inotify_init": 253,
        "inotify_add_watch": 254,
        "inotify_rm_watch": 255,
        "inotify_init1": 294,
        "fanotify_init": 300,
        "fanotify_mark": 301,
        "kexec_file_load": 320,
    },
    "aarch64": {
        "mknodat": 33,
        "umount2": 39,
        "mount": 40,
        "pivot_root": 41,
        "chroot": 51,
        "unshare": 97,
        "ptrace": 117,
        "kill": 129,
        "tkill": 130,
        "tgkill": 131,
        "rt_sigqueueinfo": 138,
        "socket": 198,
        "add_key": 217,
        "request_key": 218,
        "keyctl": 219,
        "clone": 220,
        "execve": 221,
        "rt_tgsigqueueinfo": 240,
        "perf_event_open": 241,
        "name_to_handle_at": 264,
        "open_by_handle_at": 265,
        "setns": 268,
        "process_vm_readv": 270,
        "process_vm_writev": 271,
        "kcmp": 272,
        "bpf": 280,
        "execveat": 281,
        "userfaultfd": 282,
        **_UNIFIED,
        "ioprio_set": 30,
        "sched_setparam": 118,
        "sched_setscheduler": 119,
        "sched_setaffinity": 122,
        "setpriority": 140,
        "migrate_pages": 238,
        "move_pages": 239,
        "sched_setattr": 274,
        "process_madvise": 440,
        "msgget": 186,
        "msgctl": 187,
        "msgrcv": 188,
        "msgsnd": 189,
        "semget": 190,
        "semctl": 191,
        "semtimedop": 192,
        "semop": 193,
        "shmget": 194,
        "shmctl": 195,
        "shmat": 196,
        "shmdt": 197,
        "inotify_init1": 26,
        "inotify_add_watch": 27,
        "inotify_rm_watch": 28,
        "personality": 92,
        "kexec_load": 104,
        "fanotify_init": 262,
        "fanotify_mark": 263,
        "kexec_file_load": 294,
        # modify_ldt is x86-only; aarch64 has no such call
    },
}
# prlimit64 is allowed on the calling process only (pid 0): getrlimit/setrlimit use it, and on
# another process of the same uid (the worker, under bwrap) it would change that one's limits
_PRLIMIT64 = {"x86_64": 302, "aarch64": 261}
# prctl is allowed except the options that undo the lockdown: clearing the parent-death signal
# (outliving the worker) and making the process dumpable again
_PRCTL = {"x86_64": 157, "aarch64": 167}
_PRCTL_DENIED = (1, 4)  # PR_SET_PDEATHSIG, PR_SET_DUMPABLE
_AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
_X32_BIT = 0x40000000

_LD_W_ABS, _JEQ_K, _JGE_K, _RET_K = 0x20, 0x15, 0x35, 0x06
_RET_ALLOW, _RET_ERRNO, _RET_KILL_PROCESS = 0x7FFF0000, 0x00050000, 0x80000000
_PR_SET_NO_NEW_PRIVS, _PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 38, 22, 2


def _insn(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("HBBI", code, jt, jf, k)


def program(machine: str | None = None) -> bytes | None:
    """The filter for ``machine`` (default: this one) as raw ``sock_filter`` records."""
    machine = machine or platform.machine()
    if machine not in _DENY:
        return None
    deny = sorted(set(_DENY[machine].values()))
    eperm = _RET_ERRNO | errno.EPERM
    code = [
        _insn(_LD_W_ABS, 0, 0, 4),  # seccomp_data.arch
        _insn(_JEQ_K, 1, 0, _AUDIT_ARCH[machine]),
        _insn(_RET_K, 0, 0, _RET_KILL_PROCESS),  # a foreign ABI: no way around the table
        _insn(_LD_W_ABS, 0, 0, 0),  # seccomp_data.nr
    ]
    if machine == "x86_64":
        code += [_insn(_JGE_K, 0, 1, _X32_BIT), _insn(_RET_K, 0, 0, _RET_KILL_PROCESS)]
    code += [
        _insn(_JEQ_K, 0, 6, _PRLIMIT64[machine]),
        _insn(_LD_W_ABS, 0, 0, 16),  # seccomp_data.args[0], low half
        _insn(_JEQ_K, 0, 3, 0),
        _insn(_LD_W_ABS, 0, 0, 20),  # high half
        _insn(_JEQ_K, 0, 1, 0),
        _insn(_RET_K, 0, 0, _RET_ALLOW),
        _insn(_RET_K, 0, 0, eperm),
        _insn(_JEQ_K, 0, 2 + 2 * len(_PRCTL_DENIED), _PRCTL[machine]),
        _insn(_LD_W_ABS, 0, 0, 16),  # option: an int, so the low half is all the kernel reads
    ]
    for option in _PRCTL_DENIED:
        code += [_insn(_JEQ_K, 0, 1, option), _insn(_RET_K, 0, 0, eperm)]
    code += [_insn(_RET_K, 0, 0, _RET_ALLOW), _insn(_LD_W_ABS, 0, 0, 0)]  # reload nr
    for nr in deny:
        code += [_insn(_JEQ_K, 0, 1, nr), _insn(_RET_K, 0, 0, eperm)]
    code.append(_insn(_RET_K, 0, 0, _RET_ALLOW))
    return b"".join(code)


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def install() -> bool:
    """Install the filter on this (single-threaded) process for good. False where the
    architecture is not supported; raises OSError where the kernel refuses it."""
    raw = program()
    if raw is None:
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    buffer = ctypes.create_string_buffer(raw, len(raw))
    prog = _SockFprog(len(raw) // 8, ctypes.cast(buffer, ctypes.c_void_p))
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    if libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP)")
    return True
