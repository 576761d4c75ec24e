"""symbolic_math: simplify / solve / differentiate / integrate with sympy.

Input is never evaluated as Python (no ``parse_expr``, ``sympify`` or ``eval``): sympy's
tokenizer rewrites it, and a whitelist translator builds the expression from the AST. The
tool still runs only inside the sandbox.
"""

from __future__ import annotations

import ast
import re
from functools import lru_cache
from tokenize import TokenError

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
MAX_LEN = 500
MAX_FACTORIAL = 1_000
MAX_POWER_BITS = 100_000
_FUNCTIONS = (
    "sin cos tan cot sec csc asin acos atan acot atan2 sinh cosh tanh coth asinh acosh atanh "
    "exp log sqrt root cbrt Abs sign floor ceiling Min Max re im arg conjugate erf gamma "
    "factorial binomial ff gcd lcm"
).split()
_ALIASES_FN = {
    "ln": "log",
    "abs": "Abs",
    "ceil": "ceiling",
    "arcsin": "asin",
    "arccos": "acos",
    "arctan": "atan",
    "comb": "binomial",
    "perm": "ff",
}
_CONSTANTS = {"pi": "pi", "E": "E", "e": "E", "I": "I", "oo": "oo", "inf": "oo"}
_COUNTING = {"factorial", "binomial", "ff", "comb", "perm", "gamma"}
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


@lru_cache(maxsize=1)
def _sympy():
    """sympy, a tokenizer-only front end, and the whitelisted names.

    ``stringify_expr`` only rewrites tokens (implicit multiplication, ``^``, numbers to
    ``Integer(...)``, unknown names to ``Symbol('...')``). Its output is never evaluated:
    ``_Translator`` walks the AST and builds the expression from the whitelist alone, so no
    input reaches ``eval`` or ``sympify``."""
    import sympy
    from sympy.parsing.sympy_parser import (
        convert_xor,
        implicit_multiplication_application,
        standard_transformations,
        stringify_expr,
    )

    functions = {name: getattr(sympy, name) for name in _FUNCTIONS}
    functions.update({k: getattr(sympy, v) for k, v in _ALIASES_FN.items()})
    constants = {k: getattr(sympy, v) for k, v in _CONSTANTS.items()}
    transformations = standard_transformations + (implicit_multiplication_application, convert_xor)
    return sympy, stringify_expr, transformations, functions, constants


class _Translator:
    """Builds a sympy expression from the AST of the tokenizer's output, node type by node
    type; anything else (attributes, subscripts, lambdas, strings, keywords) is refused."""

    def __init__(self) -> None:
        self.sympy, _, _, self.functions, self.constants = _sympy()
        self.nodes = 0

    def __call__(self, node: ast.AST):
        self.nodes += 1
        if self.nodes > 4 * MAX_LEN:
            raise Rejected("expression is too large")
        method = getattr(self, f"_{type(node).__name__}", None)
        if method is None:
            raise Rejected(f"{type(node).__name__} is not part of a mathematical expression")
        return method(node)

    def _Expression(self, node: ast.Expression):
        return self(node.body)

    def _Constant(self, node: ast.Constant):
        value = node.value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise Rejected("only numbers and names are accepted")
        return self.sympy.Integer(value) if isinstance(value, int) else self.sympy.Float(value)

    def _Name(self, node: ast.Name):
        if node.id in self.constants:
            return self.constants[node.id]
        raise Rejected(f"{node.id!r} is not a known constant")

    def _Tuple(self, node: ast.Tuple):
        return self.sympy.Tuple(*(self(e) for e in node.elts))

    _List = _Tuple

    def _UnaryOp(self, node: ast.UnaryOp):
        value = self(node.operand)
        if isinstance(node.op, ast.USub):
            return -value
        if isinstance(node.op, ast.UAdd):
            return value
        raise Rejected("unsupported operator")

    def _BinOp(self, node: ast.BinOp):
        left, right = self(node.left), self(node.right)
        op = type(node.op)
        if op is ast.Pow:
            if getattr(left, "is_Integer", False) and getattr(right, "is_Integer", False):
                if abs(int(right)) * abs(int(left)).bit_length() > MAX_POWER_BITS:
                    raise Rejected("power is too large to compute")
            return left**right
        binary = {
            ast.Add: lambda a, b: a + b,
            ast.Sub: lambda a, b: a - b,
            ast.Mult: lambda a, b: a * b,
            ast.Div: lambda a, b: a / b,
            ast.Mod: self.sympy.Mod,
        }
        if op not in binary:
            raise Rejected("unsupported operator")
        return binary[op](left, right)

    def _Call(self, node: ast.Call):
        if node.keywords or not isinstance(node.func, ast.Name):
            raise Rejected("only plain function calls are accepted")
        name, args = node.func.id, node.args
        if name in ("Symbol", "Integer", "Float"):
            value = args[0].value if len(args) == 1 and isinstance(args[0], ast.Constant) else None
            if name == "Symbol" and isinstance(value, str) and _NAME.fullmatch(value):
                return self.sympy.Symbol(value)
            if name == "Integer" and type(value) is int:
                return self.sympy.Integer(value)
            if name == "Float" and isinstance(value, str) and re.fullmatch(r"[0-9.eE+-]+", value):
                return self.sympy.Float(value)
            raise Rejected(f"bad literal in {name}(...)")
        if name not in self.functions:
            raise Rejected(f"{name!r} is not an allowed function")
        values = [self(a) for a in args]
        if name in _COUNTING:
            for value in values:
                if value.is_number and abs(value) > MAX_FACTORIAL:
                    raise Rejected(f"{name} of {value} is too large (limit {MAX_FACTORIAL})")
        return self.functions[name](*values)


def _parse(text: str):
    sympy, stringify_expr, transformations, functions, constants = _sympy()
    text = text.strip().rstrip(".")
    if not text:
        raise ToolError("empty expression")
    if "__" in text:
        raise Rejected("only mathematical expressions are accepted")
    # the tokenizer consults these names only to tell calls and constants from symbols
    literals = {"Symbol": sympy.Symbol, "Integer": sympy.Integer, "Float": sympy.Float}
    known = {**functions, **constants, **literals}
    try:
        tree = ast.parse(stringify_expr(text, {}, known, transformations), mode="eval")
    except (SyntaxError, TypeError, ValueError, AttributeError, TokenError) as exc:
        raise ToolError(f"cannot parse {text[:80]!r}: {exc.__class__.__name__}") from None
    except RecursionError:
        raise Rejected("expression is nested too deeply") from None
    try:
        return _Translator()(tree)
    except ToolError:  # Rejected included
        raise
    except RecursionError:
        raise Rejected("expression is nested too deeply") from None
    except (TypeError, ValueError, AttributeError, ZeroDivisionError) as exc:
        raise ToolError(f"cannot evaluate {text[:80]!r}: {exc}") from None


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
    compute("simplify: sin(x)^2 + cos(x)^2")  # import and warm sympy's caches before forking


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
