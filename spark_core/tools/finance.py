"""finance: time value of money — NPV, IRR, PV/FV, payments, annuities, compound interest.

Conventions (stated in the tool's prompt line): rates are per period as decimals (8% = 0.08,
"8%" is also read), and in ``npv`` the first cash flow is at t = 0 (undiscounted).
"""

from __future__ import annotations

from typing import Any

from spark_core.tools.base import Tool, ToolError
from spark_core.tools.calculator import format_number
from spark_core.tools.literal_call import parse_call


def _money(x: float) -> str:
    return f"{float(x):.2f}"


def _args(call_args: list[Any], kwargs: dict[str, Any], names: list[str], defaults=None) -> list:
    defaults = defaults or {}
    values = list(call_args) + [None] * (len(names) - len(call_args))
    out = []
    for i, name in enumerate(names):
        value = kwargs.get(name, values[i] if i < len(values) else None)
        if value is None:
            value = defaults.get(name)
        if value is None:
            raise ToolError(f"missing argument {name!r}: expected ({', '.join(names)})")
        out.append(value)
    return out


def _compound(principal, rate, years, n=1):
    return principal * (1 + rate / n) ** (n * years)


def _annuity_pv(payment, rate, periods):
    return payment * (1 - (1 + rate) ** -periods) / rate if rate else payment * periods


def _annuity_fv(payment, rate, periods):
    return payment * ((1 + rate) ** periods - 1) / rate if rate else payment * periods


def compute(text: str) -> str:
    import numpy_financial as npf

    call = parse_call(text)
    name = call.path[-1].lower()
    a, kw = call.args, call.kwargs
    try:
        if name == "npv":
            rate, flows = _args(a, kw, ["rate", "cashflows"])
            return f"NPV = {_money(npf.npv(rate, flows))}"
        if name == "irr":
            (flows,) = _args(a, kw, ["cashflows"])
            return f"IRR = {format_number(round(float(npf.irr(flows)), 8))}"
        if name == "pv":
            rate, nper, pmt, fv = _args(a, kw, ["rate", "nper", "pmt", "fv"], {"pmt": 0, "fv": 0})
            return f"PV = {_money(npf.pv(rate, nper, pmt, fv))}"
        if name == "fv":
            rate, nper, pmt, pv = _args(a, kw, ["rate", "nper", "pmt", "pv"], {"pmt": 0, "pv": 0})
            return f"FV = {_money(npf.fv(rate, nper, pmt, pv))}"
        if name in ("pmt", "loan", "payment"):
            rate, nper, pv = _args(a, kw, ["rate", "nper", "pv"])
            return f"payment per period = {_money(-npf.pmt(rate, nper, pv))}"
        if name == "nper":
            rate, pmt, pv = _args(a, kw, ["rate", "pmt", "pv"])
            return f"periods = {format_number(round(float(npf.nper(rate, pmt, pv)), 6))}"
        if name in ("compound", "compound_interest"):
            p, r, t, n = _args(a, kw, ["principal", "rate", "years", "n"], {"n": 1})
            value = _compound(p, r, t, n)
            return f"amount = {_money(value)}; interest = {_money(value - p)}"
        if name == "annuity_pv":
            pmt, r, n = _args(a, kw, ["payment", "rate", "periods"])
            return f"PV of annuity = {_money(_annuity_pv(pmt, r, n))}"
        if name == "annuity_fv":
            pmt, r, n = _args(a, kw, ["payment", "rate", "periods"])
            return f"FV of annuity = {_money(_annuity_fv(pmt, r, n))}"
    except (TypeError, ValueError, ZeroDivisionError, OverflowError) as exc:
        raise ToolError(f"{name}: {exc}") from None
    raise ToolError(
        f"unknown function {name!r}; use npv, irr, pv, fv, pmt, nper, compound, annuity_pv, "
        "annuity_fv"
    )


TOOL = Tool(
    name="finance",
    description="NPV, IRR, loan payments, compound interest, annuities.",
    input_format="a call such as npv(0.08, [-1000, 300, 400, 500]), irr([-1000, 300, 400, 500]),"
    " pmt(0.05/12, 360, 200000), compound(1000, 0.05, 10, n=12), annuity_pv(100, 0.05, 10)",
    run=compute,
    example="npv(0.1, [-1000, 500, 500, 500])",
)
