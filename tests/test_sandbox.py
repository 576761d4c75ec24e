"""The sandbox against hostile inputs: every case is contained, and its side effect never
happens. Also: batched execution where one bad call only marks its own row."""

from __future__ import annotations

import os
import socket
import threading
from dataclasses import replace

import pytest

from spark_core.tools.batch import ToolCall, batch_table, run_batch
from spark_core.tools.sandbox import Sandbox, SandboxLimits, scrubbed_env

SECRET = "sk-spark-test-0123456789abcdef"
LIMITS = SandboxLimits(cpu_seconds=1, wall_seconds=3, memory_mb=256, max_output_chars=2000)


@pytest.fixture(scope="module")
def secret_env():
    """Secrets in the parent's environment, as a real run with an OpenAI judge would have."""
    saved = {k: os.environ.get(k) for k in ("OPENAI_API_KEY", "HF_TOKEN", "MY_SERVICE_KEY")}
    os.environ.update(OPENAI_API_KEY=SECRET, HF_TOKEN=SECRET, MY_SERVICE_KEY=SECRET)
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="module", params=["bwrap", "process"])
def sandbox(request, secret_env):
    """Both isolation modes meet every hostile case (``process`` is the fallback layer set)."""
    if request.param == "bwrap":
        request.getfixturevalue("require_bwrap")
    with Sandbox(replace(LIMITS, isolation=request.param), workers=2) as sb:
        yield sb


@pytest.fixture(scope="module")
def listener():
    """A real TCP server on loopback that counts the connections it accepts."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.2)
    accepted = []
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = server.accept()
                accepted.append(conn)
            except OSError:
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1], accepted
    stop.set()
    thread.join()
    server.close()


def hostile_cases(tmp: str, port: int) -> list[tuple[str, str, set[str], str | None]]:
    """(tool, input, allowed statuses, path that must not exist afterwards)."""
    m = f"{tmp}/marker"
    pid = os.getpid()
    bad = {"error", "timeout", "rejected"}
    return [
        ("python", "while True: pass", {"timeout"}, None),
        ("python", "import time; time.sleep(60)", {"timeout"}, None),
        ("python", "x = 'a' * (10**10)", {"error"}, None),
        (
            "python",
            "blocks = []\nwhile True: blocks.append(' ' * 10**7)",
            {"error", "timeout"},
            None,
        ),
        ("python", "import os\nwhile True: os.fork()", {"rejected"}, None),
        ("python", f"import os; os.system('touch {m}1')", {"rejected"}, f"{m}1"),
        ("python", f"import subprocess; subprocess.run(['touch', '{m}2'])", {"rejected"}, f"{m}2"),
        (
            "python",
            f"import os; os.execv('/usr/bin/touch', ['touch', '{m}3'])",
            {"rejected"},
            f"{m}3",
        ),
        (
            "python",
            f"import ctypes; ctypes.CDLL(None).system(b'touch {m}4')",
            {"rejected"},
            f"{m}4",
        ),
        ("python", "import threading; threading.Thread(target=print).start()", bad, None),
        ("python", "while True: print('spam' * 1000)", bad, None),
        ("python", "import os\nwhile True: os.write(1, b'x' * 10**6)", bad, None),
        ("python", "f = open('big.bin', 'wb')\nf.write(b'x' * 10**8)\nf.flush()", bad, None),
        ("python", "import os; print(os.environ['OPENAI_API_KEY'])", {"error"}, None),
        (
            "python",
            "d = open('/proc/self/environ').read(); assert 'sk-' in d, 'no key'",
            {"error"},
            None,
        ),
        (
            "python",
            "import os; print(open(f'/proc/{os.getppid()}/environ').read())",
            {"rejected"},
            None,
        ),
        ("python", f"print(open('/proc/{pid}/environ').read())", {"rejected"}, None),
        ("python", f"print(open('/proc/self/../{pid}/cmdline').read())", {"rejected"}, None),
        ("python", f"open('{m}5', 'w').write('pwned')", {"rejected"}, f"{m}5"),
        ("python", f"import os; os.mkdir('{m}6')", {"rejected"}, f"{m}6"),
        ("python", f"import shutil; shutil.rmtree('{tmp}/keep')", {"rejected"}, None),
        ("python", f"import os; os.remove('{tmp}/keep/file.txt')", {"rejected"}, None),
        (
            "python",
            "import os; print(open(os.path.expanduser('/root/.netrc')).read())",
            {"rejected"},
            None,
        ),
        (
            "python",
            f"import socket; s = socket.socket(); s.connect(('127.0.0.1', {port}))",
            {"rejected"},
            None,
        ),
        (
            "python",
            f"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{port}/')",
            bad,
            None,
        ),
        ("python", f"import os; os.kill({pid}, 9)", {"rejected"}, None),
        ("python", "import os; os.kill(os.getppid(), 9)", {"rejected"}, None),
        (
            "python",
            "import resource\nresource.setrlimit(resource.RLIMIT_CPU, (10**6, 10**6))",
            {"error"},
            None,
        ),
        ("python", "import os; os.setuid(0)", {"error"}, None),
        ("python", "def f():\n    return f()\nf()", {"error"}, None),
        (
            "python",
            "import sys\nsys.setrecursionlimit(10**7)\ndef f(n):\n    return f(n + 1)\nf(0)",
            bad,
            None,
        ),
        ("calculator", "().__class__.__bases__[0].__subclasses__()", {"rejected"}, None),
        ("calculator", "__import__('os').system('id')", {"rejected"}, None),
        ("calculator", "9**9**9**9", {"rejected"}, None),
        ("calculator", "(" * 20000 + "1" + ")" * 20000, {"error", "rejected"}, None),
        (
            "symbolic_math",
            f"simplify: __import__('os').system('touch {m}7')",
            {"rejected"},
            f"{m}7",
        ),
        ("symbolic_math", "simplify: Symbol('x').__class__.__mro__", {"rejected"}, None),
        ("symbolic_math", f"solve: exec(\"open('{m}8','w')\")", {"rejected"}, f"{m}8"),
        ("symbolic_math", "solve: " + "(" * 3000 + "x" + ")" * 3000 + " = 1", {"rejected"}, None),
        (
            "unit_converter",
            f"__import__('os').system('touch {m}9') to m",
            {"error", "rejected"},
            f"{m}9",
        ),
        ("finance", "npv(0.1, [1] * 10**9)", {"error"}, None),
        ("statistics", "mean([" + "1," * 20000 + "1])", {"error"}, None),
    ]


def test_hostile_inputs_are_contained(sandbox, listener, tmp_path):
    port, accepted = listener
    (tmp_path / "keep").mkdir()
    (tmp_path / "keep" / "file.txt").write_text("still here")
    cases = hostile_cases(str(tmp_path), port)
    assert len(cases) >= 30
    failures = []
    for tool, text, allowed, must_not_exist in cases:
        result = sandbox.run(tool, text)
        if result.status not in allowed:
            failures.append(f"{tool} {text[:60]!r}: {result.status} {result.error[:120]!r}")
        if SECRET in result.output or SECRET in result.error:
            failures.append(f"{tool} {text[:60]!r} leaked the secret")
        if must_not_exist and os.path.exists(must_not_exist):
            failures.append(f"{tool} {text[:60]!r} created {must_not_exist}")
        if result.latency_ms > (LIMITS.wall_seconds + 2) * 1000:
            failures.append(f"{tool} {text[:60]!r} took {result.latency_ms:.0f} ms")
        if len(result.output) > LIMITS.max_output_chars + 100:
            failures.append(f"{tool} {text[:60]!r} returned {len(result.output)} chars")
    assert failures == []
    assert (tmp_path / "keep" / "file.txt").read_text() == "still here"
    assert accepted == []  # nothing reached the loopback server
    assert sandbox.run("calculator", "1 + 1").output == "2"  # the workers survived it all


def test_workers_hold_no_secrets(sandbox):
    env = scrubbed_env()
    assert SECRET not in "".join(env.values())
    assert not any(k in env for k in ("OPENAI_API_KEY", "HF_TOKEN", "MY_SERVICE_KEY"))
    for worker in sandbox._all:
        try:
            with open(f"/proc/{worker.proc.pid}/environ", "rb") as fh:
                assert SECRET.encode() not in fh.read()
        except PermissionError:  # a non-dumpable worker, and we are not root: unreadable
            assert os.geteuid() != 0


def test_network_is_unreachable_even_without_the_audit_hook(sandbox):
    # getaddrinfo-free raw attempt through the _socket C module
    result = sandbox.run(
        "python", "import _socket\ns = _socket.socket()\ns.connect(('127.0.0.1', 9))"
    )
    assert result.status in {"rejected", "error"}


def test_batch_marks_only_the_bad_rows(sandbox):
    calls = [
        ToolCall(1, 1, "calculator", "2 + 2"),
        ToolCall(1, 1, "python", "while True: pass"),
        ToolCall(1, 1, "python", "import os; os.system('id')"),
        ToolCall(2, 1, "cot", "Let me think: the answer is B."),
        ToolCall(2, 1, "abacus", "1 + 1"),
        ToolCall(2, 1, "chemistry", ""),
        ToolCall(3, 1, "statistics", "binom.cdf(3, n=10, p=0.5)"),
    ]
    rows = run_batch(calls, sandbox, parallelism=2)
    assert [r["status"] for r in rows] == [
        "ok",
        "timeout",
        "rejected",
        "ok",
        "rejected",
        "error",
        "ok",
    ]
    assert rows[0]["output"] == "4" and rows[6]["output"] == "binom.cdf = 0.171875"
    assert rows[3]["output"] == "Let me think: the answer is B." and rows[3]["latency_ms"] == 0.0
    table = batch_table(rows)
    assert table.num_rows == 7 and table.column("question_id").to_pylist() == [1, 1, 1, 2, 2, 2, 3]


def test_a_dead_worker_is_replaced(sandbox):
    worker = sandbox._all[0]
    worker.proc.kill()
    worker.proc.wait()
    results = [sandbox.run("calculator", "3 * 3") for _ in range(3)]
    assert results[-1].output == "9"
    assert all(w.alive() for w in sandbox._all)
