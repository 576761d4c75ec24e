"""unit_converter: unit conversion and physical constants with pint."""

from __future__ import annotations

import re
from functools import lru_cache

from spark_core.tools.base import Tool, ToolError
from spark_core.tools.calculator import format_number
from spark_core.tools.sizecheck import check_size
from spark_core.tools.textclean import math_syntax, normalize

_SPLIT = re.compile(r"\s+(?:to|in|into|as|->|=>)\s+(?!.*\s(?:to|in|into|as)\s)", re.IGNORECASE)
_WORDS = {
    "degrees celsius": "degC",
    "degree celsius": "degC",
    "celsius": "degC",
    "°c": "degC",
    "degrees fahrenheit": "degF",
    "degree fahrenheit": "degF",
    "fahrenheit": "degF",
    "°f": "degF",
    "kph": "km/h",
    "mph": "mile/hour",
    "°": "degree",
}


@lru_cache(maxsize=1)
def registry():
    import pint

    return pint.UnitRegistry(autoconvert_offset_to_baseunit=True)


def _clean(text: str) -> str:
    text = math_syntax(text)
    for word, unit in sorted(_WORDS.items(), key=lambda kv: -len(kv[0])):
        text = re.sub(re.escape(word), unit, text, flags=re.IGNORECASE)
    return text.strip()


def _quantity(text: str):
    import pint

    ureg = registry()
    try:
        return ureg.Quantity(text) if re.match(r"^[-+\d.(]", text) else ureg(text)
    except (pint.errors.PintError, AttributeError, TypeError, ValueError, SyntaxError) as exc:
        raise ToolError(f"cannot read {text!r} as a quantity: {exc}") from None


def _show(q) -> str:
    return f"{format_number(float(q.magnitude))} {q.units:~P}".strip()


def convert(text: str) -> str:
    import pint

    check_size(text, "unit_converter")  # pint computes powers exactly, without a bound
    text = normalize(text)
    text = re.sub(r"^(convert|what is|how many)\s+", "", text, flags=re.IGNORECASE)
    parts = _SPLIT.split(text, maxsplit=1)
    source = _quantity(_clean(parts[0]))
    if len(parts) == 1:  # a constant or a quantity: show it in SI base units
        if not isinstance(source, registry().Quantity):
            raise ToolError(f"{text!r} is not a quantity or constant")
        base = source.to_base_units()
        return f"{_show(source)} = {_show(base)}"
    target = _clean(parts[1]).rstrip("?")
    try:
        converted = source.to(target)
    except pint.errors.DimensionalityError as exc:
        raise ToolError(str(exc)) from None
    except (pint.errors.PintError, AttributeError, ValueError) as exc:
        raise ToolError(f"unknown target unit {target!r}: {exc}") from None
    return f"{_show(source)} = {_show(converted)}"


def _prepare(_config: dict) -> None:
    registry()("meter").to("foot")


TOOL = Tool(
    name="unit_converter",
    description="converts units; gives physical constants (pint).",
    input_format="'<quantity> to <unit>', e.g. '5 km/h to m/s', '100 degF to degC', or a "
    "constant such as 'speed_of_light' or 'boltzmann_constant'",
    run=convert,
    prepare=_prepare,
    example="5 km/h to m/s",
)
