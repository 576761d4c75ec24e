"""The escape classes and availability problems of issue 14, one test each, in both isolation
modes. Every test checks the side effect on the host — a file, a socket connection, a signal
delivered, a process left alive, a misaligned or forged result — not only the status.
Where ``process`` mode cannot enforce a rule, a test says so and asserts what does happen."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from spark_core.tools.batch import ToolCall, batch_table, run_batch
from spark_core.tools.sandbox import Sandbox, SandboxLimits

LIMITS = dict(cpu_seconds=1, wall_seconds=3, memory_mb=256, max_output_chars=2000)
SECRET = "sk-escape-test-fedcba9876543210"
MODES = ["bwrap", "process"]


@pytest.fixture(scope="module", params=MODES)
def sandbox(request):
    if request.param == "bwrap":
        request.getfixturevalue("require_bwrap")
    with Sandbox(SandboxLimits(**LIMITS, isolation=request.param), workers=2) as sb:
        yield sb


def mode(sb: Sandbox) -> str:
    return sb.limits.isolation


def run(sb: Sandbox, code: str):
    result = sb.run("python", code)
    assert SECRET not in result.output + result.error
    return result


def victim(*args: str) -> subprocess.Popen:
    """A host process of user ``nobody`` (as the old sandbox children were) to attack."""
    user = {"user": 65534, "group": 65534, "extra_groups": []} if os.geteuid() == 0 else {}
    return subprocess.Popen(["sh", "-c", "sleep 30", "sh", *args], **user)


def descendants(pid: int) -> set[int]:
    """Every host process below ``pid``."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    parents[int(entry)] = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, pp in parents.items() if pp in frontier} - found
        found |= frontier
    return found


# 1. the audit hook turned off from inside, then a Unix socket on the host
def test_disabling_the_audit_hook_reaches_no_host_unix_socket(sandbox, tmp_path):
    path = str(tmp_path / "host.sock")
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    os.chmod(path, 0o777)
    server.listen(4)
    server.settimeout(0.1)
    code = (
        "import sys, socket\n"
        "g = sys.modules['spark_core.tools.lockdown']\n"
        "g._refuse = lambda what: None\n"
        "g._BLOCKED_PREFIXES = ()\n"
        "g.violations = []\n"
        f"s = socket.socket(socket.AF_UNIX); s.connect({path!r}); s.send(b'hi')\n"
        "print('connected')"
    )
    for text in (code, code.replace("import sys, socket", "import sys, _socket as socket")):
        result = run(sandbox, text)
        assert result.status in {"rejected", "error"} and "connected" not in result.output
    with pytest.raises(TimeoutError):
        server.accept()  # no connection ever reached the host socket
    server.close()


# 2. paths checked against the scratch directory rather than the real cwd / dir_fd
def test_chdir_and_dir_fd_cannot_write_on_the_host(sandbox, tmp_path):
    os.chmod(tmp_path, 0o777)  # world-writable, like /dev/shm: only the sandbox protects it
    name = f"spark-escape-{uuid.uuid4().hex}"
    attempts = [
        f"import os; os.chdir('/dev/shm'); open('{name}', 'w').write('x')",
        f"import os; os.chdir({str(tmp_path)!r}); open('{name}', 'w').write('x')",
        f"import os; fd = os.open({str(tmp_path)!r}, os.O_RDONLY)\n"
        f"os.close(os.open('{name}', os.O_WRONLY | os.O_CREAT, dir_fd=fd))",
        f"import os; os.mkfifo({str(tmp_path / name)!r})",
        f"import os; os.chdir({str(tmp_path)!r}); os.mkfifo('{name}')",
        f"import os; os.mknod({str(tmp_path / name)!r})",
        f"import os, _posixshmem; _posixshmem.shm_open('/{name}', os.O_CREAT | os.O_RDWR, 0o666)",
        f"import sqlite3; sqlite3.connect({str(tmp_path / name)!r}).execute('create table t(x)')",
        f"import sqlite3; sqlite3.connect('/tmp/{name}').execute('create table t(x)')",
        f"import os; os.chdir('..'); open('{name}', 'w').write('x')",
    ]
    for code in attempts:
        result = run(sandbox, code)
        assert result.status in {"rejected", "error"}, (code, result)
        assert not os.path.exists(f"/dev/shm/{name}")
        assert not os.path.lexists(tmp_path / name), code
    # and nothing written earlier survives into a later call's view
    probe = f"import os; print([os.path.exists(p) for p in ('{name}', '../{name}', '/tmp/{name}')])"
    assert run(sandbox, probe).output == "[False, False, False]"


def test_chdir_cannot_read_private_keys_or_other_processes_cmdline(sandbox, tmp_path):
    ssh = tmp_path / ".ssh"
    ssh.mkdir()
    (ssh / "id_ed25519").write_text(SECRET)
    os.chmod(ssh / "id_ed25519", 0o600)
    target = victim(f"--api-key={SECRET}")
    try:
        for code in (
            f"import os; os.chdir({str(ssh)!r}); print(open('id_ed25519').read())",
            f"print(open({str(ssh / 'id_ed25519')!r}).read())",
            f"import os; os.chdir('/proc/{target.pid}'); print(open('cmdline').read())",
            f"print(open('/proc/{target.pid}/cmdline').read())",
            f"import os; print(os.readlink('/proc/{target.pid}/cwd'))",
        ):
            result = run(sandbox, code)  # run() asserts the secret never comes back
            assert result.status != "ok" or str(tmp_path) not in result.output
    finally:
        target.kill()
        target.wait()


# 3. signals to other processes, including another call in flight
def test_no_signal_reaches_a_host_process(sandbox):
    target = victim()
    try:
        for code in (
            f"import os, signal; signal.pidfd_send_signal(os.pidfd_open({target.pid}), 9)",
            f"import os; os.kill({target.pid}, 9)",
            "import os; os.kill(-1, 9)",
        ):
            run(sandbox, code)
        time.sleep(0.2)
        assert target.poll() is None  # the victim is alive
    finally:
        target.kill()
        target.wait()


def test_a_call_cannot_change_its_workers_limits_or_priority(sandbox):
    def state() -> dict[int, tuple[str, str]]:
        found = {}
        for pid in set().union(*(descendants(w.proc.pid) | {w.proc.pid} for w in sandbox._all)):
            try:
                with open(f"/proc/{pid}/limits") as lim, open(f"/proc/{pid}/stat") as stat:
                    nice = stat.read().rsplit(")", 1)[1].split()[16]
                    found[pid] = (lim.read(), nice)
            except FileNotFoundError:
                pass  # the process of a call that has answered, exiting
        return found

    before = state()
    # the call's parent (its call process) and, under bwrap, the worker (PID 1)
    for target in ("os.getppid()", "1"):
        for code in (
            f"import os, resource; resource.prlimit({target}, resource.RLIMIT_NOFILE, (3, 3))",
            f"import os, resource; resource.prlimit({target}, resource.RLIMIT_CPU, (1, 1))",
            f"import os; os.setpriority(os.PRIO_PROCESS, {target}, 19)",
            f"import os; os.sched_setaffinity({target}, {{0}})",
        ):
            assert run(sandbox, code).status in {"error", "rejected"}, code
    after = state()
    assert all(w.proc.pid in before and w.proc.pid in after for w in sandbox._all)
    assert {pid: after[pid] for pid in before if pid in after} == {
        pid: value for pid, value in before.items() if pid in after
    }
    assert sandbox.run("calculator", "2 ** 10").output == "1024"


def test_a_call_cannot_kill_another_call_in_flight(sandbox):
    killer = (
        "import os, signal\n"
        "for p in os.listdir('/proc'):\n"
        "    if p.isdigit() and int(p) != os.getpid():\n"
        "        for send in (lambda q: os.kill(q, 9),\n"
        "                     lambda q: signal.pidfd_send_signal(os.pidfd_open(q), 9)):\n"
        "            try:\n"
        "                send(int(p))\n"
        "            except Exception:\n"
        "                pass\n"
    )
    with ThreadPoolExecutor(2) as pool:
        sleeper = pool.submit(run, sandbox, "import time; time.sleep(1.5); print('survived')")
        time.sleep(0.5)
        pool.submit(run, sandbox, killer).result()
        result = sleeper.result()
    assert (result.status, result.output) == ("ok", "survived")


# 4. the worker's reply pipe, reached by walking frames or by descriptor number
FORGE = (
    "import os, sys\n"
    "line = json_line = {line!r}\n"
    "f = sys._getframe()\n"
    "while f is not None:\n"
    "    out = f.f_locals.get('stdout')\n"
    "    if out is not None:\n"
    "        try:\n"
    "            out.write(line); out.flush()\n"
    "        except Exception:\n"
    "            pass\n"
    "    f = f.f_back\n"
    "for fd in range(3, 256):\n"
    "    try:\n"
    "        os.write(fd, line.encode())\n"
    "    except OSError:\n"
    "        pass\n"
    "print('done')"
)


@pytest.mark.parametrize(
    "line",
    [
        "{}\n",
        '{"status": "ok", "output": "FORGED", "error": "", "latency_ms": 1}\n' * 3,
        "".join(
            json.dumps({"id": i, "status": "ok", "output": "FORGED", "error": "", "latency_ms": 1})
            + "\n"
            for i in range(1, 200)
        ),
    ],
    ids=["empty", "no-id", "guessed-ids"],
)
def test_forged_replies_never_reach_later_calls(sandbox, line):
    run(sandbox, FORGE.format(line=line))
    calls = [ToolCall(i, 1, "calculator", f"{i} * 7") for i in range(8)]
    rows = run_batch(calls, sandbox, parallelism=2)  # never a KeyError for the batch
    assert [r["output"] for r in rows] == [str(i * 7) for i in range(8)]
    assert all(r["status"] == "ok" for r in rows)


def test_no_other_process_descriptor_is_reachable_through_proc(sandbox):
    """``readlink`` raises no audit event: this is the kernel's answer alone (the descriptor
    numbers are guessed: listing another process's ``/proc/PID/fd`` is refused by the hook).
    Neither the worker nor (under bwrap) anything else in the namespace exposes its protocol
    pipes."""
    code = (
        "import os\n"
        "seen = []\n"
        "for p in os.listdir('/proc'):\n"
        "    if p.isdigit() and int(p) != os.getpid():\n"
        "        for n in range(32):\n"
        "            try:\n"
        "                seen.append(os.readlink(f'/proc/{p}/fd/{n}'))\n"
        "            except OSError:\n"
        "                pass\n"
        "print(seen)"
    )
    result = run(sandbox, code)
    assert result.status == "ok" and "pipe:" not in result.output and "socket:" not in result.output


# 5. the child writing its own "result" into its reply pipe
def _own_result(payload: bytes) -> str:
    return (
        "import os, stat\n"
        "for fd in range(3, 256):\n"
        "    try:\n"
        "        if stat.S_ISFIFO(os.fstat(fd).st_mode):\n"
        f"            os.write(fd, {payload!r})\n"
        "    except OSError:\n"
        "        pass\n"
        "os._exit(0)"
    )


def test_a_self_written_result_is_capped_and_schema_checked(sandbox):
    huge = json.dumps({"status": "ok", "output": "A" * 500_000, "error": ""}).encode()
    typed = json.dumps({"status": "ok", "output": 123, "error": None}).encode()
    status = json.dumps({"status": "timeout", "output": "", "error": ""}).encode()
    junk = b"\xff\xfe not json {"
    results = [run(sandbox, _own_result(p)) for p in (huge, typed, status, junk)]
    assert len(results[0].output) <= LIMITS["max_output_chars"] + 64
    for result in results[1:]:
        assert result.status == "error" and "malformed" in result.error
    rows = run_batch([ToolCall(1, 1, "python", _own_result(typed))], sandbox, 1)
    assert batch_table(rows).num_rows == 1  # no ArrowTypeError
    assert sandbox.run("calculator", "6 * 7").output == "42"  # the worker survived the junk


# 6. hang and orphan
def test_a_call_that_drops_its_pipe_and_sleeps_is_killed_on_time(sandbox):
    worker_pids = {w.proc.pid for w in sandbox._all}
    before = set().union(*(descendants(p) for p in worker_pids))
    start = time.monotonic()
    result = run(sandbox, "import os, time; os.closerange(3, 1024); time.sleep(50)")
    assert result.status == "timeout"
    assert time.monotonic() - start < LIMITS["wall_seconds"] + 2
    after = set().union(*(descendants(p) for p in worker_pids))
    assert after <= before  # the sleeping child is gone, not reparented


def _call_tree_while_sleeping(sb: Sandbox, pool: ThreadPoolExecutor):
    """Start a call that sleeps; return its future and the host processes of its worker."""
    worker = sb._all[0]
    before = descendants(worker.proc.pid)
    pending = pool.submit(sb.run, "python", "import time; time.sleep(50)")
    deadline = time.monotonic() + 15
    while descendants(worker.proc.pid) == before and time.monotonic() < deadline:
        time.sleep(0.1)  # until the call's child is there
    tree = descendants(worker.proc.pid) | {worker.proc.pid}
    assert tree - before - {worker.proc.pid}  # the call's own process
    return pending, tree, worker.root


def _all_gone(pids: set[int]) -> bool:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(os.path.exists(f"/proc/{p}") for p in pids):
        time.sleep(0.05)
    return not any(os.path.exists(f"/proc/{p}") for p in pids)


@pytest.mark.parametrize("isolation", MODES)
def test_no_call_outlives_its_worker_or_its_sandbox(request, isolation):
    """SIGKILL of a worker mid-call, then close() mid-call: no process of either call is
    left (none reparented to PID 1), and the parent removed each host scratch root."""
    if isolation == "bwrap":
        request.getfixturevalue("require_bwrap")
    sb = Sandbox(SandboxLimits(**{**LIMITS, "wall_seconds": 30}, isolation=isolation))
    with ThreadPoolExecutor(1) as pool:
        pending, tree, root = _call_tree_while_sleeping(sb, pool)
        os.kill(sb._all[0].proc.pid, 9)
        assert pending.result(timeout=60).status == "error"
        assert _all_gone(tree)
        assert root is None or not os.path.exists(root)  # bwrap: scratch never was on the host
        assert sb.run("calculator", "2 + 3").output == "5"  # replaced
        pending, tree, root = _call_tree_while_sleeping(sb, pool)
        sb.close()
        assert pending.result(timeout=10).status == "error"
    assert _all_gone(tree)
    assert root is None or not os.path.exists(root)


# 7. an earlier call's result, read from the forked worker's frames
def test_earlier_results_do_not_leak_into_later_calls(sandbox):
    marker = f"previous-{uuid.uuid4().hex}"
    for _ in range(2 * len(sandbox._all)):
        assert run(sandbox, f"print('{marker}')").output == marker
    result = run(
        sandbox,
        "import sys\n"
        "f, seen = sys._getframe(), []\n"
        "while f is not None:\n"
        "    seen.append(repr(f.f_locals))\n"
        "    f = f.f_back\n"
        "print(''.join(seen)[-1500:])",
    )
    assert result.status == "ok" and marker not in result.output


# 8. symbolic_math: no evaluation path, and counting functions capped
def test_symbolic_math_evaluates_no_code(sandbox, tmp_path):
    target = str(tmp_path / "sympy-wrote-this")
    payload = f"open({target!r}, 'w').write('x') or open('/etc/hostname').read()"
    built = "+".join(f"chr({ord(c)})" for c in payload)
    with open("/etc/hostname") as fh:
        hostname = fh.read().strip()
    for text in (
        f"simplify: sympify({built})",
        f"evaluate: parse_expr({built})",
        f"simplify: S({built})",
        f"simplify: Symbol({built})",
    ):
        result = sandbox.run("symbolic_math", text)
        assert not os.path.exists(target), text
        assert hostname not in result.output + result.error
    for text in (
        "evaluate: binomial(10**7, 5*10**6)",
        "evaluate: perm(10**7, 10**6)",
        "evaluate: factorial(10**6)",
        "evaluate: comb(10**7, 5*10**6)",
    ):
        assert sandbox.run("symbolic_math", text).status == "rejected", text
    for text in ("comb(10**7, 5*10**6)", "perm(10**7, 10**6)"):
        assert sandbox.run("calculator", text).status == "rejected", text
    assert sandbox.run("symbolic_math", "evaluate: binomial(10, 3)").output.startswith("120")


def test_symbolic_math_input_never_reaches_eval(monkeypatch):
    """In-process: builtins.eval (which ``sympify``/``parse_expr`` of a string end in) sees
    no text of the input while the tool parses and solves."""
    import builtins

    from sympy import parse_expr, sympify

    from spark_core.tools.symbolic_math import compute

    compute("simplify: sin(x)^2 + cos(x)^2")  # sympy's own lazy imports happen first
    seen: list[str] = []
    real_eval = builtins.eval

    def recording_eval(source, *args, **kwargs):
        seen.append(source if isinstance(source, str) else "")
        return real_eval(source, *args, **kwargs)

    monkeypatch.setattr(builtins, "eval", recording_eval)
    # positive control: the recording sees the text of sympy's own string parsing, the path a
    # payload would take; were it not reached, the assertion below would prove nothing
    parse_expr("qq**2 - 5*qq + 6")
    sympify("len(chr(95)) + qq")
    assert [s for s in seen if "qq" in s] and [s for s in seen if "chr" in s], seen
    seen.clear()
    for text in (
        "solve: qq^2 - 5qq + 6 = 0",
        "integrate: 2qq, 0, 3",
        "limit: sin(qq)/qq, qq->0",
        "simplify: sympify(chr(95) + chr(95))",
        "diff: exp(qq) * sin qq",
    ):
        try:
            compute(text)
        except ValueError:
            pass
    assert not [s for s in seen if "qq" in s or "chr" in s]


# what process mode does not enforce, stated as tests
def test_world_readable_host_files(sandbox):
    result = run(sandbox, "print(open('/etc/hostname').read().strip())")
    with open("/etc/hostname") as fh:
        hostname = fh.read().strip()
    if mode(sandbox) == "bwrap":
        assert result.status == "error" and hostname not in result.output  # not bound
    else:
        # process mode has no mount namespace: world-readable host files can be read
        assert (result.status, result.output) == ("ok", hostname)


def test_host_filesystem_view(sandbox):
    probe = "import os; print([os.path.exists(p) for p in ('/etc/passwd', '/run', '/home')])"
    seen = run(sandbox, probe).output
    if mode(sandbox) == "bwrap":
        assert seen == "[False, False, False]"  # only the binds of bwrap.py are there
    else:
        # process mode has the host's filesystem view (the audit hook checks writes)
        assert seen == str([os.path.exists(p) for p in ("/etc/passwd", "/run", "/home")])


def test_threads_stay_off_in_both_modes(sandbox):
    result = run(sandbox, "import threading; threading.Thread(target=print).start()")
    assert result.status in {"error", "rejected"}


def test_what_a_call_sees_of_itself(sandbox):
    code = (
        "import os\n"
        "status = dict(l.split(':', 1) for l in open('/proc/self/status').read().splitlines())\n"
        "pids = [p for p in os.listdir('/proc') if p.isdigit()]\n"
        "nics = [l.split(':')[0].strip() for l in open('/proc/net/dev').readlines()[2:]]\n"
        "print(os.getuid(), os.uname().nodename, len(pids), status['CapEff'].strip(),\n"
        "      status['Seccomp'].strip(), status['NoNewPrivs'].strip(),\n"
        "      sorted(nics))"
    )
    uid, host, pids, caps, seccomp, nnp, interfaces = run(sandbox, code).output.split(" ", 6)
    assert (caps, seccomp, nnp) == ("0000000000000000", "2", "1")  # filter mode, no privileges
    if mode(sandbox) == "bwrap":
        assert (uid, host, interfaces) == ("65534", "spark-sandbox", "['lo']")
        assert int(pids) == 3  # the worker (PID 1), this call's process and this call
    else:
        assert int(pids) > 2  # process mode shares the host's PID namespace
        if os.geteuid() == 0:
            assert int(uid) >= 1_000_000_000  # a uid of the call's own


def test_bwrap_isolation_refuses_to_start_without_bwrap(monkeypatch, tmp_path):
    from spark_core.config import ConfigError, load_config
    from spark_core.tools.bwrap import BwrapUnavailable

    assert load_config(None, []).tools.isolation == "bwrap"  # the default
    with pytest.raises(ConfigError):
        load_config(None, ["tools.isolation=none"])
    monkeypatch.setenv("PATH", str(tmp_path))  # a PATH without bwrap
    with pytest.raises(BwrapUnavailable, match="apt-get install bubblewrap"):
        Sandbox(SandboxLimits(**LIMITS))
