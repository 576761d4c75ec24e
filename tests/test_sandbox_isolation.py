"""Issue 26, one test per item, judged on the host: a clean process per call (no earlier call's
data in a later call's memory), SysV IPC and the unneeded syscalls refused by the kernel, one
memory cap for every mechanism, an audit hook that patched modules cannot switch off, blocked
modules gone, and oversized calculator/unit_converter inputs refused before any arithmetic."""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import re
import struct
import uuid

import pytest

from spark_core.tools import audit, cgroup, seccomp, sweep
from spark_core.tools.base import Rejected
from spark_core.tools.calculator import calculate
from spark_core.tools.sandbox import Sandbox, SandboxLimits
from spark_core.tools.unit_converter import convert

MODES = ["bwrap", "process"]
CAP_MB = 128
LIMITS = dict(cpu_seconds=10, wall_seconds=25, memory_mb=CAP_MB, max_output_chars=2000)


@pytest.fixture(scope="module", params=MODES)
def sandbox(request):
    if request.param == "bwrap":
        request.getfixturevalue("require_bwrap")
    # one worker: consecutive calls are served by the same worker
    with Sandbox(SandboxLimits(**LIMITS, isolation=request.param), workers=1) as sb:
        yield sb


# 1. a clean process per call
SCAN = """
first, second = {first!r}, {second!r}
control_first, control_second = {control_first!r}, {control_second!r}
control = control_first + control_second  # this call's own data: the scan must find it
hits = found_control = 0
mem = open("/proc/self/mem", "rb", buffering=0)
for line in open("/proc/self/maps").read().splitlines():
    fields = line.split()
    if not fields[1].startswith("rw"):
        continue
    lo, hi = (int(x, 16) for x in fields[0].split("-"))
    for start in range(lo, hi, 1 << 22):
        try:
            mem.seek(start)
            data = mem.read(min(hi, start + (1 << 22) + 64) - start)
        except OSError:
            continue
        for head, tail, counter in ((first, second, "h"), (control_first, control_second, "c")):
            i = data.find(head)
            while i != -1:
                if data[i + len(head) : i + len(head) + len(tail)] == tail:
                    if counter == "h":
                        hits += 1
                    else:
                        found_control += 1
                i = data.find(head, i + 1)
print(hits, found_control > 0)
"""


def test_the_previous_calls_marker_is_absent_from_the_next_calls_memory(sandbox):
    """The marker is split in two halves that the scanning call holds apart; only a copy of
    the first call's text (request, parsed input, program, output) holds them side by side."""
    first, second = b"PREVCALL" + uuid.uuid4().hex[:8].encode(), uuid.uuid4().hex.encode()
    marker = (first + second).decode()
    planted = sandbox.run("python", f"x = {marker!r} * 64\nprint({marker!r}, len(x))")
    assert planted.status == "ok" and marker in planted.output
    code = SCAN.format(
        first=first,
        second=second,
        control_first=b"CTRL" + uuid.uuid4().hex[:8].encode(),
        control_second=uuid.uuid4().hex.encode(),
    )
    scan = sandbox.run("python", code)
    assert scan.status == "ok", scan.error
    assert scan.output.split() == ["0", "True"]  # none found; the scan does find its own


# 2. SysV IPC and unneeded syscalls refused by the kernel
def _errno_under_filter(call) -> int:
    """Run ``call(libc)`` in a forked child under the sandbox's seccomp filter; its errno."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 255
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            seccomp.install()
            result = call(libc)
            os.write(write_fd, struct.pack("ii", result, ctypes.get_errno()))
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    data = os.read(read_fd, 8)
    os.close(read_fd)
    os.waitpid(pid, 0)
    result, err = struct.unpack("ii", data)
    return err if result == -1 else 0


IPC_PRIVATE, IPC_CREAT = 0, 0o1000
DENIED = {
    "shmget 200 MB": lambda c: c.shmget(IPC_PRIVATE, ctypes.c_size_t(200 << 20), IPC_CREAT | 0o600),
    "shmat": lambda c: c.syscall(30, 0, 0, 0) if os.uname().machine == "x86_64" else -1,
    "msgget": lambda c: c.msgget(IPC_PRIVATE, IPC_CREAT | 0o600),
    "semget": lambda c: c.semget(IPC_PRIVATE, 1, IPC_CREAT | 0o600),
    "inotify_init1": lambda c: c.inotify_init1(0),
    "fanotify_init": lambda c: c.fanotify_init(0, 0),
    "personality": lambda c: c.personality(0xFFFFFFFF),
    "prctl(PR_SET_DUMPABLE)": lambda c: c.prctl(4, 1, 0, 0, 0),
    "prctl(PR_SET_PDEATHSIG)": lambda c: c.prctl(1, 0, 0, 0, 0),
}


@pytest.mark.skipif(seccomp.program() is None, reason="no seccomp filter for this architecture")
@pytest.mark.parametrize("name", DENIED)
def test_sysv_ipc_and_unneeded_syscalls_are_refused(name):
    assert _errno_under_filter(DENIED[name]) == errno.EPERM


def test_the_filter_keeps_what_tools_use():
    assert _errno_under_filter(lambda c: c.prctl(3, 0, 0, 0, 0) - 1) == 0  # PR_GET_DUMPABLE


def _denied_numbers(raw: bytes) -> set[int]:
    """Syscall numbers the program answers with EPERM: ``JEQ nr`` then ``RET ERRNO|EPERM``."""
    insns = [struct.unpack("HBBI", raw[i : i + 8]) for i in range(0, len(raw), 8)]
    return {
        k
        for (code, _, _, k), (next_code, _, _, next_k) in zip(insns, insns[1:], strict=False)
        if code == 0x15 and next_code == 0x06 and next_k == 0x00050000 | errno.EPERM
    }


@pytest.mark.parametrize(
    "machine, numbers",
    [
        ("x86_64", {29, 30, 31, 67, 68, 69, 70, 71, 64, 65, 66, 220, 154, 135, 246, 320, 294, 300}),
        ("aarch64", {194, 195, 196, 197, 186, 187, 188, 189, 190, 191, 192, 193, 92, 104, 294}),
    ],
)
def test_every_supported_architecture_denies_ipc_and_the_unneeded_calls(machine, numbers):
    assert numbers <= _denied_numbers(seccomp.program(machine))


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for a private IPC namespace")
def test_the_sweep_removes_every_ipc_object():
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            assert libc.unshare(0x08000000) == 0  # CLONE_NEWIPC: the host's objects stay out
            assert libc.shmget(IPC_PRIVATE, ctypes.c_size_t(1 << 20), IPC_CREAT | 0o600) >= 0
            assert libc.msgget(IPC_PRIVATE, IPC_CREAT | 0o600) >= 0
            assert libc.semget(IPC_PRIVATE, 1, IPC_CREAT | 0o600) >= 0
            before = sum(map(len, sweep.ipc_objects().values()))
            removed = sweep.remove_ipc()
            after = sum(map(len, sweep.ipc_objects().values()))
            os.write(write_fd, struct.pack("iii", before, removed, after))
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    data = os.read(read_fd, 12)
    os.close(read_fd)
    assert os.waitpid(pid, 0)[1] == 0
    assert struct.unpack("iii", data) == (3, 3, 0)


# 3. one memory cap for every mechanism
def _host_shmem_mb() -> int:
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("Shmem:"):
                return int(line.split()[1]) // 1024
    return 0


MECHANISMS = {
    "anonymous": "b = bytearray(400 << 20)\nprint('allocated')",
    "numpy": "import numpy as np\na = np.ones(400 << 17)\nprint(a.sum())",
    "memfd": (
        "import os\nfds = []\nfor _ in range(60):\n"
        "    fd = os.memfd_create('m')\n    os.write(fd, b'x' * (4 << 20))\n    fds.append(fd)\n"
        "print('allocated')"
    ),
    "tmpfs files": (
        "for i in range(100):\n"
        "    with open(f'f{i}', 'wb') as fh:\n"
        "        fh.write(b'x' * (4 << 20))\n"
        "print('allocated')"
    ),
}


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_a_call_past_the_cap_is_stopped_and_memory_returns(sandbox, mechanism):
    worker = sandbox._all[0]
    if worker.cgroup is None:
        pytest.skip(f"no memory cgroup here ({worker.no_cgroup_reason}): rlimits only, see docs")
    if mechanism == "tmpfs files" and sandbox.limits.isolation == "process":
        pytest.skip("process mode: scratch is on the host's /tmp, whose pages are disk cache")
    shmem, usage = _host_shmem_mb(), worker.cgroup.usage() >> 20
    result = sandbox.run("python", MECHANISMS[mechanism])
    assert result.status == "error"
    # the cgroup's cap, or (files under bwrap) the /tmp tmpfs, sized to the same number
    stopped = (f"memory limit ({CAP_MB} MB) exceeded", "No space left on device")
    assert any(reason in result.error for reason in stopped), result.error
    worker = sandbox._all[0]  # the same one, or its replacement
    assert worker.cgroup.usage() >> 20 <= usage + 16
    assert _host_shmem_mb() < shmem + CAP_MB - 32  # the tmpfs pages went with the files
    assert sandbox.run("calculator", "6 * 7").output == "42"


def test_the_worker_cgroup_is_removed_with_the_sandbox(require_bwrap):
    with Sandbox(SandboxLimits(**LIMITS), workers=1) as sb:
        group = sb._all[0].cgroup
        if group is None:
            pytest.skip(f"no memory cgroup here ({sb._all[0].no_cgroup_reason})")
        assert all(os.path.isdir(d) for d in group.dirs)
        limit = "memory.limit_in_bytes" if group.version == 1 else "memory.max"
        with open(os.path.join(group.memory, limit)) as fh:
            cap = int(fh.read())
        assert group.usage() < cap <= group.usage() + (CAP_MB << 20)
    assert not any(os.path.exists(d) for d in group.dirs)


def test_without_a_cgroup_the_rlimits_hold_and_a_warning_says_so(monkeypatch, caplog):
    monkeypatch.setattr(cgroup, "ROOT", "/nonexistent-cgroup-root")
    with caplog.at_level(logging.WARNING, logger="spark_core.tools.sandbox"):
        with Sandbox(SandboxLimits(**LIMITS, isolation="process"), workers=1) as sb:
            assert sb._all[0].cgroup is None
            result = sb.run("python", MECHANISMS["anonymous"])
    assert result.status == "error" and "MemoryError" in result.error
    assert any("no memory cgroup" in r.message for r in caplog.records)


def test_a_worker_that_cannot_join_its_cgroup_falls_back_with_a_warning(monkeypatch, caplog):
    probe, reason = cgroup.create()
    if probe is None:
        pytest.skip(f"no memory cgroup here ({reason}): the other fallback")
    probe.remove()
    monkeypatch.setattr(cgroup.WorkerCgroup, "procs_files", lambda self: ["/nonexistent/procs"])
    with caplog.at_level(logging.WARNING, logger="spark_core.tools.sandbox"):
        with Sandbox(SandboxLimits(**LIMITS, isolation="process"), workers=1) as sb:
            assert sb._all[0].cgroup is None
            assert sb.run("calculator", "6 * 7").output == "42"
    assert any("could not join its cgroup" in r.message for r in caplog.records)
    base, number = probe.memory.rsplit("-", 1)
    assert not os.path.exists(f"{base}-{int(number) + 1}")  # the worker's: removed, not left


# 4. the hook holds its own references; blocked modules are gone
def test_patched_path_functions_change_nothing(sandbox, tmp_path):
    target = tmp_path / "escaped.txt"
    code = (
        "import os, posixpath, builtins, genericpath\n"
        "inside = os.getcwd() + '/ok'\n"
        "posixpath.realpath = os.path.realpath = lambda p, *a, **k: inside\n"
        "posixpath.join = os.path.join = lambda *p: inside\n"
        "os.getcwd = lambda: inside\n"
        "posixpath.islink = genericpath.isdir = os.path.isdir = lambda p: False\n"
        "builtins.isinstance = lambda *a: False\n"
        f"open({str(target)!r}, 'w').write('escaped')\n"
    )
    result = sandbox.run("python", code)
    assert not target.exists()
    assert result.status == "rejected"
    assert f"writing {target}" in result.error


def test_the_hook_refuses_changes_to_its_own_functions(sandbox):
    code = "from spark_core.tools import audit\naudit.resolve.__defaults__ = (None,) * 6\n"
    result = sandbox.run("python", code)
    assert result.status == "rejected"
    assert "changing the audit hook" in result.error


def test_another_processs_descriptors_are_neither_listed_nor_opened(sandbox):
    listed = sandbox.run("python", "import os\nprint(os.listdir('/proc/1/fd'))")
    opened = sandbox.run("python", "print(open('/proc/1/fd/0').read(1))")
    assert (listed.status, opened.status) == ("rejected", "rejected")
    assert "listing /proc/1/fd" in listed.error and "reading /proc/1/fd/0" in opened.error


@pytest.mark.parametrize("module", ["_posixsubprocess", "cffi", "_cffi_backend", "ctypes"])
def test_blocked_modules_cannot_be_imported(sandbox, module):
    result = sandbox.run("python", f"import {module}\nprint('imported')")
    assert result.status == "rejected"
    assert f"import {module} is not allowed" in result.error


def test_no_module_still_holds_an_unaudited_blocked_function(sandbox):
    code = "import sys, subprocess\nprint(subprocess._fork_exec, '_posixsubprocess' in sys.modules)"
    result = sandbox.run("python", code)
    assert (result.status, result.output) == ("ok", "None False")


def test_the_hooks_realpath_matches_the_kernels(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "file").write_text("x")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    (tmp_path / "rel").symlink_to("real/../real/file")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    for path in ("link/file", "rel", "link/../link/./file", "real/missing/..", "link/missing"):
        full = str(tmp_path / path)
        assert audit.realpath(full) == os.path.realpath(full), path
    assert audit.realpath(str(tmp_path / "loop")) == ""  # fails closed: inside no directory


# 5. size checks
@pytest.mark.parametrize(
    "text, reason",
    [
        ("1" * 100_000, "input of 100000 characters (limit 500)"),
        ("1" * 450 + " + 1", "a number of 450 digits (limit 400)"),
        ("9**9**9**9", "9**387420489 is too large to compute"),
    ],
)
def test_oversized_calculator_inputs_are_refused(text, reason):
    with pytest.raises(Rejected, match=re.escape(reason)):
        calculate(text)


@pytest.mark.parametrize(
    "text, reason",
    [
        ("1" * 100_000 + " m to ft", "input of 100008 characters"),
        ("1" * 450 + " m to ft", "a number of 450 digits"),
        ("9**9**9**9 m to ft", "a power of a power"),
        ("10^99999 m to km", "exponent 99999 has more than 3 digits"),
    ],
)
def test_oversized_unit_converter_inputs_are_refused(text, reason):
    with pytest.raises(Rejected, match=reason):
        convert(text)


def test_ordinary_inputs_still_compute():
    assert calculate("2^3^2") == "512"
    assert calculate("1.0001**10000").startswith("2.71814")
    assert convert("10^-9 m to nm") == "1e-09 m = 1 nm"


def test_oversized_inputs_are_rejected_through_the_sandbox(sandbox):
    assert sandbox.run("calculator", "1" * 100_000).status == "rejected"
    assert sandbox.run("unit_converter", "9**9**9**9 m to ft").status == "rejected"
