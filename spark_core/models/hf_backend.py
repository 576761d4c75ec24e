"""Local transformers backend: batched generation with left padding and chat templates,
greedy or seeded sampling, stop strings, and LoRA adapters that switch without reloading."""

from __future__ import annotations

import contextlib
import hashlib
import threading
from pathlib import Path
from typing import Any

import torch

from spark_core.models.default_model import resolve_model
from spark_core.models.requests import ChatRequest, Completion

_MODELS: dict[tuple[str, str, str], Any] = {}
_MODELS_LOCK = threading.Lock()


def pick_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def pick_dtype(dtype: str, device: str) -> torch.dtype:
    if dtype == "auto":
        if device.startswith("cuda") and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    return getattr(torch, dtype)


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(path: str, device: str, dtype: torch.dtype, shared: bool = True):
    """A causal LM in eval mode; shared instances are loaded once per process."""
    from transformers import AutoModelForCausalLM

    key = (path, device, str(dtype))
    with _MODELS_LOCK:
        if shared and key in _MODELS:
            return _MODELS[key]
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device).eval()
        if shared:
            _MODELS[key] = model
        return model


def directory_hash(path: str | Path) -> str:
    digest = hashlib.sha256()
    for file in sorted(Path(path).rglob("*")):
        if file.is_file():
            digest.update(file.name.encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()


class HFBackend:
    """A transformers causal LM that generates for batches of ChatRequests."""

    backend = "hf"

    def __init__(self, name: str, device: str = "auto", dtype: str = "auto", batch_size: int = 16):
        self.name = name
        self.path = resolve_model(name)
        self.device = pick_device(device)
        self.dtype = pick_dtype(dtype, self.device)
        self.batch_size = batch_size
        self.tokenizer = load_tokenizer(self.path)
        self.model = load_model(self.path, self.device, self.dtype)
        self.adapter: str | None = None
        self._adapters: dict[str, str] = {}
        self._lock = threading.Lock()

    # -- adapters ---------------------------------------------------------------------------
    def add_adapter(self, adapter_name: str, path: str | Path) -> None:
        """Attach a PEFT adapter (kept alongside the others; switch with ``use_adapter``)."""
        from peft import PeftModel

        if not isinstance(self.model, PeftModel):
            base = load_model(self.path, self.device, self.dtype, shared=False)
            self.model = PeftModel.from_pretrained(base, str(path), adapter_name=adapter_name)
            self.model.eval()
        else:
            self.model.load_adapter(str(path), adapter_name=adapter_name)
        self._adapters[adapter_name] = directory_hash(path)

    def use_adapter(self, adapter_name: str | None) -> None:
        if adapter_name is not None and adapter_name not in self._adapters:
            raise KeyError(f"adapter {adapter_name!r} is not loaded; known: {list(self._adapters)}")
        self.adapter = adapter_name
        if adapter_name is not None:
            self.model.set_adapter(adapter_name)

    @property
    def model_id(self) -> str:
        """What cache keys name: the model plus the active adapter's content hash."""
        if self.adapter is None:
            return self.name
        return f"{self.name}+{self.adapter}@{self._adapters[self.adapter][:16]}"

    def _adapter_context(self):
        if self.adapter is None and self._adapters:
            return self.model.disable_adapter()
        return contextlib.nullcontext()

    # -- prompts ----------------------------------------------------------------------------
    def prompt_text(self, request: ChatRequest) -> str:
        messages = [{"role": r, "content": c} for r, c in request.messages]
        text = self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )
        return text + request.prefill

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False).input_ids)

    # -- generation -------------------------------------------------------------------------
    def generate(self, requests: list[ChatRequest]) -> list[Completion]:
        """Generate for every request, batching those with the same sampling parameters."""
        results: list[Completion | None] = [None] * len(requests)
        groups: dict[tuple, list[int]] = {}
        for i, req in enumerate(requests):
            key = (req.max_new_tokens, req.temperature, req.top_p, req.seed, req.stop)
            groups.setdefault(key, []).append(i)
        with self._lock:
            for indices in groups.values():
                for start in range(0, len(indices), self.batch_size):
                    chunk = indices[start : start + self.batch_size]
                    for i, done in zip(
                        chunk, self._generate_batch([requests[i] for i in chunk]), strict=True
                    ):
                        results[i] = done
        return [r for r in results if r is not None]

    def _generate_batch(self, batch: list[ChatRequest]) -> list[Completion]:
        first = batch[0]
        texts = [self.prompt_text(r) for r in batch]
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        enc = enc.to(self.device)
        kwargs: dict[str, Any] = {
            "max_new_tokens": first.max_new_tokens,
            "pad_token_id": self.tokenizer.pad_token_id,
        }
        if first.temperature > 0:
            kwargs.update(do_sample=True, temperature=first.temperature, top_p=first.top_p)
            torch.manual_seed(first.seed)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if first.stop:
            kwargs.update(stop_strings=list(first.stop), tokenizer=self.tokenizer)
        with torch.inference_mode(), self._adapter_context():
            out = self.model.generate(**enc, **kwargs)
        new = out[:, enc["input_ids"].shape[1] :]
        eos = {self.tokenizer.eos_token_id, self.tokenizer.pad_token_id}
        completions = []
        for row, mask in zip(new.tolist(), enc["attention_mask"].tolist(), strict=True):
            n = next((j for j, t in enumerate(row) if t in eos), len(row))
            text = self.tokenizer.decode(row[:n], skip_special_tokens=True)
            reason = "stop" if n < len(row) else "length"
            for stop in first.stop:
                if stop in text:
                    text, reason = text[: text.index(stop)], "stop"
            completions.append(Completion(text, sum(mask), n, reason))
        return completions
