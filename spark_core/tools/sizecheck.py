"""Input-size pre-checks for the tools that compute with numbers a model wrote.

Why: big-integer arithmetic and parsing are quadratic or worse in the number of digits, so a
100,000-digit literal or a tower of powers burns the whole CPU budget of a call before the
limit stops it. Refusing them up front, by looking at the text only, is fast, and says why.
"""

from __future__ import annotations

import re

from spark_core.tools.base import Rejected

MAX_LEN = 500  # characters, as symbolic_math
MAX_DIGITS = 400  # in one number: more than a float holds (~309), far fewer than hurt
MAX_EXPONENT_DIGITS = 3  # a literal exponent up to 999
_DIGITS = re.compile(r"\d+")
_POWER = re.compile(r"(?:\*\*|\^)\s*[-+(]*\s*(\d[\d_]*)")
_TOWER = re.compile(r"(?:\*\*|\^)\s*[-+(]*\s*[\w.]+\s*\)*\s*(?:\*\*|\^)")


def check_size(text: str, tool: str, powers: bool = True) -> None:
    """Raise ``Rejected`` naming the limit when ``text`` is too long or holds a number with too
    many digits; with ``powers`` (a tool that does not bound a power's result itself), also a
    literal exponent with too many digits or a power of a power."""
    if len(text) > MAX_LEN:
        raise Rejected(f"{tool}: input of {len(text)} characters (limit {MAX_LEN})")
    longest = max((len(m) for m in _DIGITS.findall(text)), default=0)
    if longest > MAX_DIGITS:
        raise Rejected(f"{tool}: a number of {longest} digits (limit {MAX_DIGITS})")
    if not powers:
        return
    for match in _POWER.finditer(text):
        if len(match.group(1).replace("_", "")) > MAX_EXPONENT_DIGITS:
            raise Rejected(
                f"{tool}: exponent {match.group(1)[:20]} has more than {MAX_EXPONENT_DIGITS} digits"
            )
    if _TOWER.search(text):
        raise Rejected(f"{tool}: a power of a power (such as 9**9**9) is not computed")
