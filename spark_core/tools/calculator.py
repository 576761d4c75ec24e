"""calculator: arithmetic and elementary functions through an AST whitelist (never ``eval``)."""

from __future__ import annotations

import ast
import math
import operator
import re

from spark_core.tools.base import Rejected, Tool, ToolError
from spark_core.tools.sizecheck import check_size
from spark_core.tools.textclean import drop_thousands_separators, math_syntax, normalize

MAX_EXPONENT = 10_000  # bits of an integer power's result
MAX_FACTORIAL = 1_000
MAX_NODES = 500
MAX_DEPTH = 50

_BINARY = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}


def _factorial(n: float) -> int:
    if n != int(n) or n < 0:
        raise ToolError("factorial needs a non-negative integer")
    if n > MAX_FACTORIAL:
        raise Rejected(f"factorial({int(n)}) is too large (limit {MAX_FACTORIAL})")
    return math.factorial(int(n))


_FACTORIAL_BITS = math.factorial(MAX_FACTORIAL).bit_length()


def _count_args(name: str, n: float, k: float) -> tuple[int, int]:
    """comb/perm arguments, refused where the result would outgrow factorial's cap: their
    values reach factorial's size without calling it."""
    if n != int(n) or k != int(k) or n < 0 or k < 0:
        raise ToolError(f"{name} needs non-negative integers")
    n, k = int(n), int(k)
    factors = min(k, n - k) if name == "comb" else min(k, n)
    if factors > 0 and factors * math.log2(n + 1) > _FACTORIAL_BITS:
        raise Rejected(f"{name}({n}, {k}) is too large (limit: the size of {MAX_FACTORIAL}!)")
    return n, k


def _comb(n: float, k: float) -> int:
    return math.comb(*_count_args("comb", n, k))


def _perm(n: float, k: float | None = None) -> int:
    return math.perm(*_count_args("perm", n, n if k is None else k))


def _log(x: float, base: float | None = None) -> float:
    return math.log(x) if base is None else math.log(x, base)


FUNCTIONS = {
    "sqrt": math.sqrt,
    "exp": math.exp,
    "ln": math.log,
    "log": _log,
    "log10": math.log10,
    "log2": math.log2,
    "sin": math.sin,
    "cos": math.cos,
    "tan": math.tan,
    "asin": math.asin,
    "acos": math.acos,
    "atan": math.atan,
    "atan2": math.atan2,
    "sinh": math.sinh,
    "cosh": math.cosh,
    "tanh": math.tanh,
    "degrees": math.degrees,
    "radians": math.radians,
    "abs": abs,
    "round": round,
    "floor": math.floor,
    "ceil": math.ceil,
    "factorial": _factorial,
    "comb": _comb,
    "perm": _perm,
    "gcd": math.gcd,
    "lcm": math.lcm,
    "min": min,
    "max": max,
    "hypot": math.hypot,
}
CONSTANTS = {"pi": math.pi, "e": math.e, "tau": math.tau, "inf": math.inf}


def _power(base: float, exponent: float) -> float:
    if abs(exponent) > 1 and base not in (0, 1, -1):
        bits = abs(exponent) * math.log2(abs(base)) if base else 0
        if bits > MAX_EXPONENT:
            raise Rejected(f"{base}**{exponent} is too large to compute")
    return operator.pow(base, exponent)


def evaluate_node(node: ast.AST, depth: int = 0) -> float:
    """Evaluate a whitelisted arithmetic AST node (the only evaluator tools use)."""
    return _eval(node, depth)


def _eval(node: ast.AST, depth: int = 0) -> float:
    if depth > MAX_DEPTH:
        raise Rejected("expression is nested too deeply")
    if isinstance(node, ast.Expression):
        return _eval(node.body, depth + 1)
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        return _BINARY[type(node.op)](_eval(node.left, depth + 1), _eval(node.right, depth + 1))
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
        return _power(_eval(node.left, depth + 1), _eval(node.right, depth + 1))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval(node.operand, depth + 1))
    if isinstance(node, ast.Name) and node.id in CONSTANTS:
        return CONSTANTS[node.id]
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.keywords:
        fn = FUNCTIONS.get(node.func.id)
        if node.func.id.startswith("_"):
            raise Rejected(f"{node.func.id!r} is not allowed")
        if fn is None:
            raise ToolError(f"unknown function {node.func.id!r}; known: {', '.join(FUNCTIONS)}")
        return fn(*(_eval(a, depth + 1) for a in node.args))
    if isinstance(node, (ast.Attribute, ast.Subscript, ast.Lambda, ast.Call, ast.Name)):
        shown = ast.unparse(node)[:60]
        raise Rejected(f"{shown!r} is not allowed: only numbers, + - * / // % **, and functions")
    raise Rejected(f"{type(node).__name__} is not allowed in a calculator expression")


def _parse(expr: str) -> ast.Expression:
    try:
        tree = ast.parse(expr, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        raise ToolError(f"cannot parse {expr[:80]!r}: {exc.__class__.__name__}") from None
    if sum(1 for _ in ast.walk(tree)) > MAX_NODES:
        raise Rejected(f"expression has more than {MAX_NODES} parts")
    return tree


_PERCENT_OF = re.compile(r"(\d+(?:\.\d+)?)\s*%\s*of\s*", re.IGNORECASE)
_NAMES = "|".join(sorted([*FUNCTIONS, *CONSTANTS], key=len, reverse=True))
_ARITH_SPAN = re.compile(rf"(?:\d[\d.]*(?:[eE][-+]?\d+)?|\.\d+|\b(?:{_NAMES})\b|[-+*/%(),\s])+")


def format_number(value: float) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.12g}"


def calculate(text: str) -> str:
    check_size(text, "calculator", powers=False)  # _power bounds each power's result
    text = normalize(text)
    expr = drop_thousands_separators(math_syntax(text))
    expr = _PERCENT_OF.sub(r"(\1/100)*", expr)
    expr = re.sub(r"(\d)\s*%", r"(\1/100)", expr)
    expr = re.sub(r"^(what is|compute|calculate|evaluate)\s+", "", expr, flags=re.IGNORECASE)
    try:
        tree = _parse(expr)
    except ToolError:
        # prose around the expression: take the longest arithmetic-looking span that parses
        spans = [m.strip(" ,") for m in _ARITH_SPAN.findall(expr)]
        spans = sorted((m for m in spans if re.search(r"\d", m)), key=len, reverse=True)
        for span in spans:
            try:
                tree = _parse(span)
                break
            except ToolError:
                continue
        else:
            raise
    try:
        return format_number(_eval(tree))
    except Rejected:
        raise
    except ZeroDivisionError:
        raise ToolError("division by zero") from None
    except OverflowError:
        raise Rejected("result overflows a float") from None
    except (TypeError, ValueError) as exc:
        raise ToolError(str(exc)) from None


TOOL = Tool(
    name="calculator",
    description="arithmetic with sqrt, log, exp, trig, factorial, comb.",
    input_format="one arithmetic expression, e.g. 2.5*(3+4)/sqrt(2) or 0.07*1200",
    run=calculate,
    example="500 * 2**6",
)
