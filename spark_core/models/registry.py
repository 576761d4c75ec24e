"""The one model registry of a process: it loads each model once and hands out the
generators, judges and policies that stages ask for.

It owns every model cache there is: base weights (shared by every backend on the same model,
device and dtype), response caches (one SQLite file each), the synthesis models of a run
config, and the evaluation policies — the run's generator with a LoRA adapter attached and
switched to, or merged into its own copy of the weights. Callers ask it for a model and do no
caching of their own.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from spark_core.artifacts import canonical_hash
from spark_core.config import ModelConfig, RunConfig
from spark_core.models.response_cache import ResponseCache

if TYPE_CHECKING:  # calls -> judge -> hf_backend -> this module: import them when used
    from spark_core.models.calls import Generator, Judge
    from spark_core.models.hf_backend import HFBackend


def load_weights(path: str, device: str, dtype: Any) -> Any:
    """A causal LM from a local folder, in eval mode on ``device`` (not shared)."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device).eval()


class ModelRegistry:
    """Models loaded once per process. Thread-safe: parallel shards ask for the same models."""

    def __init__(self) -> None:
        self._lock = threading.RLock()  # re-entered: a backend built here loads shared weights
        self._weights: dict[tuple[str, str, str], Any] = {}
        self._caches: dict[str, ResponseCache] = {}
        self._stage: dict[str, tuple[Generator, Judge]] = {}
        self._backends: dict[str, HFBackend] = {}

    def __reduce__(self) -> tuple:
        # a task body that names the registry is pickled for another process (Dask workers):
        # there it means that process's registry, with its own models
        return (_process_registry, ())

    def weights(self, path: str, device: str, dtype: Any) -> Any:
        """The shared base weights of a model (backends without an adapter use these)."""
        key = (path, device, str(dtype))
        with self._lock:
            if key not in self._weights:
                self._weights[key] = load_weights(path, device, dtype)
            return self._weights[key]

    def response_cache(self, cfg: RunConfig) -> ResponseCache:
        """The run's response cache (every model call, checkpointed), opened once."""
        path = cfg.runtime.response_cache_path()
        with self._lock:
            if path not in self._caches:
                self._caches[path] = ResponseCache(path)
            return self._caches[path]

    def stage_models(self, cfg: RunConfig) -> tuple[Generator, Judge]:
        """The generator and judge of a run config (synthesis, preflight, behaviour log-probs)."""
        from spark_core.models.calls import make_generator, make_judge

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
        Switching is shared state: evaluate one adapter policy at a time per process."""
        from spark_core.models.calls import Generator, make_generator
        from spark_core.models.hf_backend import HFBackend, directory_hash
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
            attached = backend.adapter_hash(name) if backend and adapter else None
            if backend is None or attached not in (None, adapter_hash):
                # a new backend on the same shared weights: an adapter of this name but other
                # content (another run's) must not be served under this one's name
                backend = self._backends[gen.name] = HFBackend(
                    gen.name, gen.device, gen.dtype, gen.batch_size
                )
            if adapter and cfg.evaluation.merge_adapters:
                key = f"{gen.name}+{name}@{adapter_hash}"
                if key not in self._backends:
                    self._backends[key] = backend.merged(name, adapter)
                return Generator(self._backends[key], cache, Usage(gen.name))
            if adapter and backend.adapter_hash(name) is None:
                backend.add_adapter(name, adapter)
            backend.use_adapter(name if adapter else None)
        return Generator(backend, cache, Usage(gen.name))


REGISTRY = ModelRegistry()


def _process_registry() -> ModelRegistry:
    return REGISTRY
