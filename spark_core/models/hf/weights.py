"""Base weights shared by every local backend on the same model, device and dtype, and the
record of which PeftModel injected adapters into them.

One copy of each model per process: the registry (``registry.py``) frees them between stages
(``release_models``); a backend that attaches adapters to the shared weights records itself
here, so every other backend on them runs with the adapters disabled.
"""

from __future__ import annotations

import threading
from typing import Any


def load_weights(path: str, device: str, dtype: Any) -> Any:
    """A causal LM from a local folder, in eval mode on ``device`` (not shared)."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device).eval()


class SharedWeights:
    """Models loaded once per process. Thread-safe: parallel shards ask for the same models."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._weights: dict[tuple[str, str, str], Any] = {}
        self._hosts: dict[int, Any] = {}  # id(shared weights) -> the PeftModel wrapping them

    def get(self, path: str, device: str, dtype: Any) -> Any:
        """The shared base weights of a model (backends without an adapter use these)."""
        key = (path, device, str(dtype))
        with self._lock:
            if key not in self._weights:
                self._weights[key] = load_weights(path, device, dtype)
            return self._weights[key]

    def clear(self) -> None:
        """Forget every loaded model (their memory is freed once no backend holds them)."""
        with self._lock:
            self._weights.clear()

    def attach_host(self, peft_model: Any) -> None:
        """Record that ``peft_model`` injected adapters into shared weights (see
        ``HFBackend._adapter_context``: other backends on them run with adapters off)."""
        with self._lock:
            self._hosts[id(peft_model.get_base_model())] = peft_model

    def detach_host(self, peft_model: Any) -> None:
        with self._lock:
            self._hosts.pop(id(peft_model.get_base_model()), None)

    def adapter_host(self, model: Any) -> Any | None:
        """The PeftModel that attached adapters to ``model``'s weights, if any."""
        return self._hosts.get(id(model))


WEIGHTS = SharedWeights()
