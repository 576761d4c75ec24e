"""statistics: probability distributions, descriptive statistics and tests (scipy.stats)."""

from __future__ import annotations

import re
from typing import Any

from spark_core.tools.base import Tool, ToolError
from spark_core.tools.literal_call import parse_call
from spark_core.tools.textclean import normalize

DISTRIBUTIONS = {
    "binom": "binom",
    "binomial": "binom",
    "norm": "norm",
    "normal": "norm",
    "poisson": "poisson",
    "t": "t",
    "student_t": "t",
    "chi2": "chi2",
    "chisquare_dist": "chi2",
    "f": "f",
    "expon": "expon",
    "exponential": "expon",
    "uniform": "uniform",
    "geom": "geom",
    "geometric": "geom",
    "hypergeom": "hypergeom",
    "nbinom": "nbinom",
    "beta": "beta",
    "gamma": "gamma",
    "lognorm": "lognorm",
    "bernoulli": "bernoulli",
}
METHODS = {"pmf", "pdf", "cdf", "sf", "ppf", "isf", "mean", "var", "std", "median", "interval"}
DESCRIPTIVE = {
    "mean",
    "median",
    "mode",
    "stdev",
    "pstdev",
    "variance",
    "pvariance",
    "describe",
    "sum",
    "min",
    "max",
    "range",
    "zscore",
}
TESTS = {
    "ttest_1samp",
    "ttest_ind",
    "ttest_rel",
    "pearsonr",
    "spearmanr",
    "linregress",
    "chisquare",
    "binomtest",
}
MAX_SAMPLE = 10_000


def _fmt(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return "(" + ", ".join(_fmt(v) for v in value) + ")"
    try:
        return f"{float(value):.6g}"
    except (TypeError, ValueError):
        return str(value)


def _numbers(args: list[Any]) -> list[float]:
    flat: list[float] = []
    for a in args:
        flat.extend(a if isinstance(a, (list, tuple)) else [a])
    if not flat or len(flat) > MAX_SAMPLE:
        raise ToolError(f"give between 1 and {MAX_SAMPLE} numbers")
    try:
        return [float(x) for x in flat]
    except (TypeError, ValueError):
        raise ToolError("data must be numbers") from None


def _descriptive(name: str, args: list[Any], kwargs: dict[str, Any]) -> str:
    import statistics as st

    import numpy as np
    from scipy import stats

    if name == "zscore":
        x = kwargs.get("x", args[0] if args else None)
        mu = kwargs.get("mu", kwargs.get("mean", args[1] if len(args) > 1 else None))
        sigma = kwargs.get("sigma", kwargs.get("sd", args[2] if len(args) > 2 else None))
        if None in (x, mu, sigma):
            raise ToolError("zscore(x, mu, sigma)")
        z = (x - mu) / sigma
        below, above = _fmt(stats.norm.cdf(z)), _fmt(stats.norm.sf(z))
        return f"z = {_fmt(z)}; P(Z <= z) = {below}; P(Z > z) = {above}"
    data = _numbers(args)
    if name == "describe":
        d = stats.describe(np.array(data))
        sd = float(np.sqrt(d.variance)) if len(data) > 1 else 0.0
        return (
            f"n = {d.nobs}, mean = {_fmt(d.mean)}, sample sd = {_fmt(sd)}, "
            f"min = {_fmt(d.minmax[0])}, max = {_fmt(d.minmax[1])}, median = "
            f"{_fmt(np.median(data))}"
        )
    funcs = {
        "mean": st.fmean,
        "median": st.median,
        "mode": st.mode,
        "stdev": st.stdev,
        "pstdev": st.pstdev,
        "variance": st.variance,
        "pvariance": st.pvariance,
        "sum": sum,
        "min": min,
        "max": max,
        "range": lambda d: max(d) - min(d),
    }
    try:
        return f"{name} = {_fmt(funcs[name](data))}"
    except st.StatisticsError as exc:
        raise ToolError(str(exc)) from None


def _test(name: str, args: list[Any], kwargs: dict[str, Any]) -> str:
    from scipy import stats

    result = getattr(stats, name)(*args, **kwargs)
    fields = getattr(result, "_fields", None) or [
        f for f in ("statistic", "pvalue", "slope", "intercept", "rvalue") if hasattr(result, f)
    ]
    return f"{name}: " + ", ".join(f"{f} = {_fmt(getattr(result, f))}" for f in fields)


def compute(text: str) -> str:
    from scipy import stats

    text = normalize(text)
    plain = re.match(r"^\s*(\w+)\s+(?:of\s+)?([-\d.,\s\[\]]+)$", text)
    if plain and plain.group(1).lower() in DESCRIPTIVE:  # "mean of 1, 2, 3"
        text = f"{plain.group(1).lower()}([{plain.group(2).strip(' []')}])"
    call = parse_call(text)
    head = call.path[0].lower()
    if len(call.path) == 1 and head in DESCRIPTIVE:
        return _descriptive(head, call.args, call.kwargs)
    if len(call.path) == 1 and head in TESTS:
        try:
            return _test(head, call.args, call.kwargs)
        except (TypeError, ValueError) as exc:
            raise ToolError(f"{head}: {exc}") from None
    if head not in DISTRIBUTIONS or len(call.path) != 2:
        raise ToolError(
            "use dist.method(x, params) such as binom.cdf(3, n=10, p=0.5) or norm.sf(1.96), "
            f"a descriptive statistic ({', '.join(sorted(DESCRIPTIVE))}) or a test "
            f"({', '.join(sorted(TESTS))})"
        )
    method = call.path[1].lower()
    if method not in METHODS:
        raise ToolError(f"unknown method {method!r}; use one of {', '.join(sorted(METHODS))}")
    dist = getattr(stats, DISTRIBUTIONS[head])
    try:
        if call.frozen_args or call.frozen_kwargs:
            frozen = dist(*call.frozen_args, **call.frozen_kwargs)
            value = getattr(frozen, method)(*call.args, **call.kwargs)
        else:
            value = getattr(dist, method)(*call.args, **call.kwargs)
    except (TypeError, ValueError) as exc:
        raise ToolError(f"{head}.{method}: {exc}") from None
    return f"{DISTRIBUTIONS[head]}.{method} = {_fmt(value)}"


def _prepare(_config: dict) -> None:
    from scipy import stats

    stats.binom.cdf(1, 2, 0.5)


TOOL = Tool(
    name="statistics",
    description="probability distributions, descriptive statistics, tests (scipy).",
    input_format="dist.method(x, params) e.g. binom.cdf(3, n=10, p=0.5), norm.sf(1.96); "
    "mean([1, 2, 3]); zscore(130, 100, 15); ttest_1samp([..], 5)",
    run=compute,
    prepare=_prepare,
    example="binom.cdf(3, n=10, p=0.5)",
)
