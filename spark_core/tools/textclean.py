"""Tolerate the messy inputs a small model writes before declaring an error."""

from __future__ import annotations

import re

_FENCE = re.compile(r"```(?:[a-zA-Z0-9_+-]*[ \t]*\n)?(.*?)```", re.DOTALL)
_LABEL = re.compile(r"^\s*(action\s+input|input|query|expression|code)\s*[:=]\s*", re.IGNORECASE)
_TRANSLATE = str.maketrans(
    {
        "\u2212": "-",  # minus sign
        "\u2013": "-",  # en dash
        "\u2014": "-",  # em dash
        "\u00d7": "*",  # multiplication sign
        "\u22c5": "*",  # dot operator
        "\u00b7": "*",  # middle dot
        "\u00f7": "/",  # division sign
        "\u2044": "/",  # fraction slash
        "\u00a0": " ",  # no-break space
        "\u2009": " ",  # thin space
        "\u202f": " ",  # narrow no-break space
        "\u201c": '"',
        "\u201d": '"',
        "\u2018": "'",
        "\u2019": "'",
        "\u00b2": "^2",
        "\u00b3": "^3",
        "\u221a": "sqrt",
        "\u03c0": "pi",
    }
)


def unfence(text: str) -> str:
    """The body of the first fenced code block, or the text itself."""
    match = _FENCE.search(text)
    if match:
        return match.group(1)
    return text.strip().strip("`")


def normalize(text: str) -> str:
    """Common clean-up for every tool: fences, labels, quotes, unicode look-alikes."""
    text = unfence(text).translate(_TRANSLATE)
    text = _LABEL.sub("", text.strip())
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1]
    return text.strip()


def math_syntax(text: str) -> str:
    """Arithmetic spelled the way people write it: ``^`` for powers."""
    return text.replace("^", "**").rstrip(" .;?")


def drop_thousands_separators(text: str) -> str:
    """``12,000`` -> ``12000``, only for numbers written with a separator at every group."""
    return re.sub(
        r"(?<![\d,.])\d{1,3}(?:,\d{3})+(?![\d,])", lambda m: m.group(0).replace(",", ""), text
    )
