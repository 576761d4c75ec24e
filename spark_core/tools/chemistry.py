"""chemistry: molar mass and composition of formulas, element properties (periodictable)."""

from __future__ import annotations

import re

from spark_core.tools.base import Tool, ToolError
from spark_core.tools.textclean import normalize

_PREFIX = re.compile(
    r"^(molar\s+mass|molecular\s+weight|mass|mw|composition|formula|element|properties)"
    r"\s*(of)?\s*[:=]?\s*",
    re.IGNORECASE,
)
_SUBSCRIPTS = str.maketrans("₀₁₂₃₄₅₆₇₈₉", "0123456789")


def _element(token: str):
    import periodictable

    token = token.strip()
    try:
        return periodictable.elements.symbol(token)
    except (ValueError, KeyError):
        pass
    try:
        return periodictable.elements.name(token.lower())
    except (ValueError, KeyError):
        return None


def _describe_element(el) -> str:
    parts = [f"{el.name} ({el.symbol}): atomic number {el.number}", f"atomic mass {el.mass:.4f} u"]
    if el.density is not None:
        parts.append(f"density {el.density} g/cm^3")
    return "; ".join(parts)


def analyse(text: str) -> str:
    import periodictable

    text = _PREFIX.sub("", normalize(text).translate(_SUBSCRIPTS)).strip().rstrip(".?")
    if not text:
        raise ToolError("give a formula such as H2SO4 or an element such as Fe")
    if re.fullmatch(r"[A-Za-z]+", text) and (text.islower() or len(text) > 2):
        el = _element(text)
        if el is not None:
            return _describe_element(el)
    if re.fullmatch(r"[A-Z][a-z]?", text):
        el = _element(text)
        if el is not None:
            return _describe_element(el)
    candidates = re.findall(r"[A-Z][A-Za-z0-9()\[\]·.*]*", text)
    formula_text = max(candidates, key=len) if candidates else text
    formula_text = formula_text.replace("·", ".").replace("*", ".")
    try:
        formula = periodictable.formula(formula_text)
    except (ValueError, TypeError, KeyError) as exc:
        raise ToolError(f"cannot read {formula_text!r} as a chemical formula: {exc}") from None
    if not formula.atoms:
        raise ToolError(f"{formula_text!r} contains no elements")
    fractions = formula.mass_fraction
    comp = ", ".join(
        f"{el.symbol} {100 * fractions[el]:.2f}%"
        for el in sorted(fractions, key=lambda e: e.symbol)
    )
    return f"{formula_text}: molar mass {formula.mass:.3f} g/mol ({comp})"


def _prepare(_config: dict) -> None:
    import periodictable

    periodictable.formula("H2O").mass  # noqa: B018 - warm-up


TOOL = Tool(
    name="chemistry",
    description="molar mass of a formula, element properties.",
    input_format="a formula such as H2SO4 or Ca(OH)2, or an element symbol/name such as Fe",
    run=analyse,
    prepare=_prepare,
    example="molar mass of Ca(OH)2",
)
