"""The one model registry of a process: it loads each model once and hands out the
generators, judges and policies that stages ask for.

It owns every model cache there is: base weights (shared by every backend on the same model,
device and dtype; kept in ``hf/weights.py``), response caches (one SQLite file each), the
synthesis models of a run config, and the evaluation policies — the run's generator with a
LoRA adapter attached to the shared base and switched to, or merged into a copy of the
weights. Evaluation memory is bounded: at most one merged copy is alive (asking for another
policy frees the previous one) and ``release_policies`` frees it and detaches every adapter
once a policy is done, so a run holds the base plus at most one extra copy of the weights
whatever its number of policies and seeds. Callers ask it for a model and do no caching of
their own.
"""

from __future__ import annotations

import gc
import sys
import threading
from typing import TYPE_CHECKING, Any

from spark_core.artifacts import canonical_hash
from spark_core.config import ModelConfig, RunConfig
from spark_core.models.hf.weights import WEIGHTS
from spark_core.models.response_cache import ResponseCache

if TYPE_CHECKING:  # the models themselves are imported when first asked for
    from spark_core.models.generator import Generator
    from spark_core.models.hf.backend import HFBackend
    from spark_core.models.judge.judge import Judge


class ModelRegistry:
    """Models loaded once per process. Thread-safe: parallel shards ask for the same models."""

    def __init__(self) -> None:
        self._lock = threading.RLock()  # re-entered: release_models releases the policies
        self._caches: dict[str, ResponseCache] = {}
        self._stage: dict[str, tuple[Generator, Judge]] = {}
        self._backends: dict[str, HFBackend] = {}  # the policies' backend per generator
        self._merged: tuple[str, HFBackend] | None = None  # the one merged policy alive

    def __reduce__(self) -> tuple:
        # a task body that names the registry is pickled for another process (Dask workers):
        # there it means that process's registry, with its own models
        return (_process_registry, ())

    def weights(self, path: str, device: str, dtype: Any) -> Any:
        """The shared base weights of a model (backends without an adapter use these)."""
        return WEIGHTS.get(path, device, dtype)

    def response_cache(self, cfg: RunConfig) -> ResponseCache:
        """The run's response cache (every model call, checkpointed), opened once."""
        path = cfg.runtime.response_cache_path()
        with self._lock:
            if path not in self._caches:
                self._caches[path] = ResponseCache(path)
            return self._caches[path]

    def stage_models(self, cfg: RunConfig) -> tuple[Generator, Judge]:
        """The generator and judge of a run config (synthesis, preflight, behaviour log-probs)."""
        from spark_core.models.generator import make_generator
        from spark_core.models.judge.judge import make_judge

        key = canonical_hash(
            [cfg.section("generator"), cfg.section("judge"), cfg.runtime.response_cache_path()]
        )
        cache = self.response_cache(cfg)
        with self._lock:
            if key not in self._stage:
                self._stage[key] = (
                    make_generator(cfg.generator, cache),
                    make_judge(cfg.judge, cache),
                )
            return self._stage[key]

    def policy(
        self,
        cfg: RunConfig,
        name: str,
        *,
        model: ModelConfig | None = None,
        adapter: str | None = None,
        adapter_hash: str = "",
    ) -> Generator:
        """The generator a policy runs on: another ``model``, or the run's generator with
        ``adapter`` (a PEFT folder) attached and switched to — merged into a copy of the
        weights when ``evaluation.merge_adapters`` is set — or with no adapter (the base).
        Switching is shared state: evaluate one adapter policy at a time per process, and
        call ``release_policies`` when it is done."""
        from spark_core.models.generator import Generator, make_generator
        from spark_core.models.hf.backend import HFBackend, directory_hash
        from spark_core.models.usage import Usage

        cache = self.response_cache(cfg)
        if model is not None:
            return make_generator(model, cache)
        gen = cfg.generator
        if gen.backend != "hf":
            if adapter:
                raise ValueError("adapters need the hf backend (or serve them, e.g. vLLM --lora)")
            return make_generator(gen, cache)
        if adapter and not adapter_hash:
            adapter_hash = directory_hash(adapter)
        with self._lock:
            backend = self._backends.get(gen.name)
            if backend is None:
                backend = self._backends[gen.name] = HFBackend(
                    gen.name, gen.device, gen.dtype, gen.batch_size
                )
            if adapter and cfg.evaluation.merge_adapters:
                key = f"{gen.name}+{name}@{adapter_hash}"
                if self._merged is None or self._merged[0] != key:
                    self._merged = None  # free the previous policy's copy before the next
                    _collect()
                    self._merged = (key, backend.merged(name, adapter))
                return Generator(self._merged[1], cache, Usage(gen.name))
            if adapter and backend.adapter_hash(name) not in (None, adapter_hash):
                # an adapter of this name but other content (another run's) must not be
                # served under this one's name
                backend.remove_adapters()
            if adapter and backend.adapter_hash(name) is None:
                backend.add_adapter(name, adapter)
            backend.use_adapter(name if adapter else None)
        return Generator(backend, cache, Usage(gen.name))

    def release_policies(self) -> None:
        """Free what evaluation policies hold: the merged copy and every adapter attached to
        the shared base (which gets its own layers back). Call when a policy is done."""
        with self._lock:
            self._merged = None
            for backend in self._backends.values():
                backend.remove_adapters()
            _collect()

    def release_models(self) -> None:
        """Drop every loaded model (response caches stay open): a stage that loads its own
        (training) gets their memory; the next stage that asks loads them again."""
        with self._lock:
            self.release_policies()
            self._stage.clear()
            self._backends.clear()
            WEIGHTS.clear()
            _collect()


def _collect() -> None:
    """Return freed weights to the system now (and CUDA's cache to the device)."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


REGISTRY = ModelRegistry()


def _process_registry() -> ModelRegistry:
    return REGISTRY
