"""python: runs a short Python program in the sandbox and returns what it printed."""

from __future__ import annotations

import ast
import contextlib
import io

from spark_core.tools.base import Tool, ToolError
from spark_core.tools.textclean import unfence

MAX_PRINTED = 20_000


class _BoundedBuffer(io.StringIO):
    """stdout that stops a program printing without end."""

    def write(self, s: str) -> int:
        if self.tell() + len(s) > MAX_PRINTED:
            super().write(s[: max(0, MAX_PRINTED - self.tell())])
            raise ToolError(f"output exceeded {MAX_PRINTED} characters")
        return super().write(s)


def run_program(text: str) -> str:
    source = unfence(text)
    try:
        tree = ast.parse(source, mode="exec")
    except SyntaxError as exc:
        raise ToolError(f"SyntaxError: {exc.msg} (line {exc.lineno})") from None
    # like a REPL: a trailing expression is printed when the program printed nothing
    tail = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        tail = ast.Expression(tree.body.pop().value)
    namespace: dict = {"__name__": "__main__"}
    out = _BoundedBuffer()
    with contextlib.redirect_stdout(out):
        exec(compile(tree, "<program>", "exec"), namespace)  # noqa: S102 - sandboxed child only
        if tail is not None:
            value = eval(compile(tail, "<program>", "eval"), namespace)  # noqa: S307
            if value is not None and not out.getvalue():
                print(repr(value))
    return out.getvalue().rstrip("\n")


TOOL = Tool(
    name="python",
    description="runs a short Python program and returns what it prints.",
    input_format="a Python program; print() the result",
    run=run_program,
    example="print(sum(range(1, 51)))",
)
