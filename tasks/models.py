"""Models for the stage tasks of this process, loaded once and shared across tasks."""

from __future__ import annotations

import threading

from spark_core.artifacts import canonical_hash
from spark_core.config import RunConfig
from spark_core.models.calls import Generator, Judge, make_generator, make_judge
from spark_core.models.response_cache import ResponseCache

_LOCK = threading.Lock()
_CACHES: dict[str, ResponseCache] = {}
_MODELS: dict[str, tuple[Generator, Judge]] = {}


def response_cache(cfg: RunConfig) -> ResponseCache:
    path = cfg.runtime.response_cache_path()
    with _LOCK:
        if path not in _CACHES:
            _CACHES[path] = ResponseCache(path)
        return _CACHES[path]


def models_for(cfg: RunConfig) -> tuple[Generator, Judge]:
    key = canonical_hash(
        [cfg.section("generator"), cfg.section("judge"), cfg.runtime.response_cache_path()]
    )
    cache = response_cache(cfg)
    with _LOCK:
        if key not in _MODELS:
            _MODELS[key] = (make_generator(cfg.generator, cache), make_judge(cfg.judge, cache))
        return _MODELS[key]
