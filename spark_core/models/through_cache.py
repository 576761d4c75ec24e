"""Every model call through the response cache: what the cache holds is served, the rest is
computed and checkpointed the moment each result exists, under a stage's stop rules
(``stop_rules.py``: a cost limit, a judge failure watch).

Only finished calls are cached — a failed request or judgement is retried by the next run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from spark_core.models.requests import Gate, OnDone
from spark_core.models.response_cache import ResponseCache
from spark_core.models.stop_rules import StopRules
from spark_core.models.usage import Usage


def through_cache(
    cache: ResponseCache | None,
    usage: Usage,
    keys: list[str],
    items: list[Any],
    compute: Callable[[list[Any], OnDone, Gate], list[Any]],
    restore: Callable[[dict[str, Any]], Any],
    ok: Callable[[Any], bool],
    stop_rules: StopRules | None = None,
) -> list[Any]:
    """Serve what the cache holds; compute the rest, checkpointing each result the moment it
    exists — a crash loses only the calls in flight. Failed results are not cached. With
    ``stop_rules``, each request is let through only while the budget allows it and the judge
    has not tripped its failure watch; a stop raises once every request in flight is
    checkpointed."""
    stop_rules = stop_rules or StopRules()
    results: list[Any] = [None] * len(items)
    missing = []
    for i, key in enumerate(keys):
        stored = cache.get(key) if cache is not None else None
        if stored is None:
            missing.append(i)
            continue
        results[i] = restore(stored)
        usage.record(stored["prompt_tokens"], stored["completion_tokens"], cached=True)
        stop_rules.observe(results[i], True)
    reserved: dict[int, float] = {}

    def gate(j: int) -> bool:
        allowed, reserved[j] = stop_rules.admit(items[missing[j]])
        return allowed

    def checkpoint(j: int, result: Any) -> None:
        i = missing[j]
        results[i] = result
        stop_rules.settle(reserved.pop(j, 0.0), result)
        stop_rules.observe(result, ok(result))
        if not ok(result):
            usage.add_failure()
            return
        usage.record(
            result.prompt_tokens,
            result.completion_tokens,
            cached_prompt=getattr(result, "cached_prompt_tokens", 0),
            batch=getattr(result, "batch", False),
        )
        if cache is not None:
            cache.put(keys[i], result.to_dict())

    if missing:
        compute([items[i] for i in missing], checkpoint, gate if stop_rules.active else None)
    if any(r is None for r in results):
        raise stop_rules.stop_error()
    return results
