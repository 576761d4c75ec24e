"""symbolic_math: simplify / solve / differentiate / integrate with sympy.

``parse_expr`` evaluates Python, so this tool only ever runs inside the sandbox, and inputs are
screened for names that reach outside mathematics before sympy sees them.
"""

from __future__ import annotations

import re

from spark_core.tools.base import Rejected, Tool, ToolError
from spark_core.tools.textclean import normalize

OPERATIONS = (
    "solve",
    "simplify",
    "diff",
    "integrate",
    "limit",
    "factor",
    "expand",
    "series",
    "evaluate",
)
_ALIASES = {
    "derivative": "diff",
    "differentiate": "diff",
    "d/dx": "diff",
    "integral": "integrate",
    "eval": "evaluate",
    "numeric": "evaluate",
    "roots": "solve",
    "zeros": "solve",
}
_FORBIDDEN = re.compile(
    r"__|\b(import|lambda|exec|eval|open|getattr|setattr|globals|locals|"
    r"compile|system|subprocess|os|sys|builtins)\b"
)
MAX_LEN = 500


def _sympy():
    import sympy
    from sympy.parsing.sympy_parser import (
        convert_xor,
        implicit_multiplication_application,
        parse_expr,
        standard_transformations,
    )

    transformations = standard_transformations + (implicit_multiplication_application, convert_xor)
    return sympy, parse_expr, transformations


def _parse(text: str):
    sympy, parse_expr, transformations = _sympy()
    text = text.strip().rstrip(".")
    if not text:
        raise ToolError("empty expression")
    if _FORBIDDEN.search(text):
        raise Rejected("only mathematical expressions are accepted")
    try:
        return parse_expr(text, transformations=transformations, evaluate=True)
    except (SyntaxError, TypeError, ValueError, AttributeError, RecursionError) as exc:
        raise ToolError(f"cannot parse {text[:80]!r}: {exc.__class__.__name__}") from None


def _split_args(body: str) -> list[str]:
    """Split on top-level commas only."""
    parts, depth, current = [], 0, ""
    for ch in body:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    return [p.strip() for p in parts if p.strip()]


def _symbol(expr, given: str | None):
    sympy = _sympy()[0]
    if given:
        return sympy.Symbol(given.strip())
    free = sorted(expr.free_symbols, key=lambda s: s.name)
    if not free:
        return sympy.Symbol("x")
    names = [s.name for s in free]
    return free[names.index("x")] if "x" in names else free[0]


def _fmt(value) -> str:
    return str(value).replace("**", "^")


def _solve(args: list[str]) -> str:
    sympy = _sympy()[0]
    equations = []
    for part in args:
        if re.fullmatch(r"[A-Za-z]\w*", part) and equations:
            continue  # a trailing variable name
        part = part.replace("==", "=")
        if "=" in part:
            lhs, rhs = part.split("=", 1)
            equations.append(_parse(lhs) - _parse(rhs))
        else:
            equations.append(_parse(part))
    variables = [a for a in args if re.fullmatch(r"[A-Za-z]\w*", a)]
    symbols = [sympy.Symbol(v) for v in variables] or sorted(
        set().union(*(e.free_symbols for e in equations)), key=lambda s: s.name
    )
    if len(equations) == 1:
        solutions = sympy.solve(equations[0], symbols[0] if len(symbols) == 1 else symbols)
    else:
        solutions = sympy.solve(equations, symbols, dict=True)
    if not solutions:
        return "no solution"
    if isinstance(solutions, list) and all(not isinstance(s, (dict, tuple)) for s in solutions):
        name = symbols[0] if len(symbols) == 1 else "x"
        return ", ".join(f"{name} = {_fmt(s)}" for s in solutions)
    return _fmt(solutions)


def compute(text: str) -> str:
    text = normalize(text)
    if len(text) > MAX_LEN:
        raise Rejected(f"input longer than {MAX_LEN} characters")
    match = re.match(r"^\s*([A-Za-z/]+)\s*[:(]?\s*(.*)$", text, re.DOTALL)
    op, body = "", text
    if match:
        word = match.group(1).lower()
        word = _ALIASES.get(word, word)
        if word in OPERATIONS:
            op, body = word, match.group(2)
            if text[match.end(1) :].lstrip().startswith("(") and body.endswith(")"):
                body = body[:-1]
    if not op:
        op = "solve" if re.search(r"(?<![<>=!])=(?!=)", body) else "simplify"
    sympy = _sympy()[0]
    args = _split_args(body)
    if not args:
        raise ToolError(f"{op}: no expression given")
    if op == "solve":
        return _solve(args)
    expr = _parse(args[0])
    if op == "simplify":
        return _fmt(sympy.simplify(expr))
    if op == "factor":
        return _fmt(sympy.factor(expr))
    if op == "expand":
        return _fmt(sympy.expand(expr))
    if op == "evaluate":
        return _fmt(sympy.N(expr, 12))
    if op == "diff":
        var = _symbol(expr, args[1] if len(args) > 1 else None)
        return _fmt(sympy.simplify(sympy.diff(expr, var)))
    if op == "integrate":
        bounds = [_parse(a) for a in args[1:]]
        if len(bounds) == 1 and isinstance(bounds[0], sympy.Tuple):
            bounds = list(bounds[0])
        if len(bounds) == 3:
            return _fmt(sympy.integrate(expr, (bounds[0], bounds[1], bounds[2])))
        if len(bounds) == 2:
            return _fmt(sympy.integrate(expr, (_symbol(expr, None), bounds[0], bounds[1])))
        return _fmt(sympy.integrate(expr, _symbol(expr, args[1] if len(args) > 1 else None)))
    if op == "limit":
        target = args[1] if len(args) > 1 else "x -> 0"
        var, _, point = target.replace("->", "=").partition("=")
        if not point:
            var, point = "", var
        return _fmt(sympy.limit(expr, _symbol(expr, var or None), _parse(point)))
    if op == "series":
        var = _symbol(expr, args[1] if len(args) > 1 else None)
        return _fmt(sympy.series(expr, var, 0, 6).removeO())
    raise ToolError(f"unknown operation {op!r}; use one of {', '.join(OPERATIONS)}")


def _prepare(_config: dict) -> None:
    _sympy()[0].simplify("x")  # import and warm sympy's caches before forking


TOOL = Tool(
    name="symbolic_math",
    description="solve equations, simplify, differentiate, integrate (sympy).",
    input_format="'<operation>: <expression>', operation one of solve, simplify, diff, "
    "integrate, limit, factor, expand, series, evaluate; e.g. 'solve: x^2-5x+6=0', "
    "'integrate: 2x, 0, 3'",
    run=compute,
    prepare=_prepare,
    example="solve: x^2 - 5x + 6 = 0",
)
