"""Read ``name(args)``-style tool inputs without evaluating code: arguments must be literals."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from typing import Any

from spark_core.tools.base import ToolError
from spark_core.tools.calculator import evaluate_node
from spark_core.tools.textclean import math_syntax, normalize


@dataclass
class Call:
    path: list[str]  # e.g. ["binom", "cdf"]; a frozen call binom(10, .5).cdf(3) gives the same
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    frozen_args: list[Any] = field(default_factory=list)
    frozen_kwargs: dict[str, Any] = field(default_factory=dict)


def _literal(node: ast.AST) -> Any:
    """A literal, or arithmetic on literals (``0.05/12``) through the calculator's whitelist."""
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_literal(e) for e in node.elts]
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    try:
        return evaluate_node(node)
    except ToolError:
        shown = ast.unparse(node)[:40]
        raise ToolError(f"argument {shown!r} must be a number or a list of numbers") from None


def _call_parts(call: ast.Call) -> tuple[list[Any], dict[str, Any]]:
    args = [_literal(a) for a in call.args]
    kwargs = {k.arg: _literal(k.value) for k in call.keywords if k.arg}
    return args, kwargs


def parse_call(text: str) -> Call:
    """Parse the first call expression in ``text``; percentages become fractions."""
    text = math_syntax(normalize(text))
    text = re.sub(r"(\d+(?:\.\d+)?)\s*%", lambda m: repr(float(m.group(1)) / 100), text)
    match = re.search(r"[A-Za-z_][\w.]*\s*\(", text)
    if not match:
        raise ToolError("expected a call such as name(arg, ...)")
    source = text[match.start() :]
    tree = None
    for end in range(len(source), 0, -1):  # drop trailing prose until it parses
        if source[end - 1] != ")":
            continue
        try:
            tree = ast.parse(source[:end], mode="eval")
            break
        except SyntaxError:
            continue
    if tree is None or not isinstance(tree.body, ast.Call):
        raise ToolError(f"cannot parse a call in {text[:80]!r}")
    node = tree.body
    args, kwargs = _call_parts(node)
    func = node.func
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Call):  # frozen: d(..).m(..)
        inner = func.value
        if not isinstance(inner.func, ast.Name):
            raise ToolError("unsupported call form")
        frozen_args, frozen_kwargs = _call_parts(inner)
        return Call([inner.func.id, func.attr], args, kwargs, frozen_args, frozen_kwargs)
    path = []
    while isinstance(func, ast.Attribute):
        path.insert(0, func.attr)
        func = func.value
    if not isinstance(func, ast.Name):
        raise ToolError("unsupported call form")
    path.insert(0, func.id)
    return Call(path, args, kwargs)
