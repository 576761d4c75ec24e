"""Local transformers backend: batched generation with left padding and chat templates,
greedy or seeded sampling, stop strings, and LoRA adapters that switch without reloading."""

from __future__ import annotations

import contextlib
import copy
import hashlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from spark_core.config import ModelConfig, default_of
from spark_core.models.hf import shared_prefix
from spark_core.models.hf.default_model import resolve_model
from spark_core.models.hf.prefix_cache import (
    GROUP_OVERHEAD_TOKENS,
    Prefix,
    cache_arg,
    new_cache,
    prefix_groups,
    shared_forward,
)
from spark_core.models.hf.weights import WEIGHTS, load_weights
from spark_core.models.requests import ChatRequest, Completion, OnDone

_COMPUTE_LOCKS: dict[str, threading.RLock] = {}
_LOCKS_LOCK = threading.Lock()


def compute_lock(device: str) -> threading.RLock:
    """One lock per device for every forward pass in the process: threads (parallel shards,
    generator and judge) take turns instead of oversubscribing the same cores."""
    with _LOCKS_LOCK:
        return _COMPUTE_LOCKS.setdefault(device, threading.RLock())


def _sampling(request: ChatRequest) -> tuple:
    return (request.max_new_tokens, request.temperature, request.top_p, request.seed, request.stop)


def cut_at_stop(text: str, stops: tuple[str, ...], reason: str) -> tuple[str, str]:
    """``text`` up to (not including) its stop strings, and the finish reason: "stop" when one
    was found, else ``reason``. Decoding halts only once a stop string has been generated, so
    the text still ends with it (or overshoots it by the rest of the last token)."""
    for stop in stops:
        if stop in text:
            text, reason = text[: text.index(stop)], "stop"
    return text, reason


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

    def __init__(
        self,
        name: str,
        device: str = default_of(ModelConfig, "device"),
        dtype: str = default_of(ModelConfig, "dtype"),
        batch_size: int = default_of(ModelConfig, "batch_size"),
    ):
        self.name = name
        self.path = resolve_model(name)
        self.device = pick_device(device)
        self.dtype = pick_dtype(dtype, self.device)
        self.batch_size = batch_size
        self.tokenizer = load_tokenizer(self.path)
        self.model = WEIGHTS.get(self.path, self.device, self.dtype)
        self.adapter: str | None = None
        self._adapters: dict[str, str] = {}
        self._lock = compute_lock(self.device)

    # -- adapters ---------------------------------------------------------------------------
    def add_adapter(self, adapter_name: str, path: str | Path) -> None:
        """Attach a PEFT adapter to this backend's weights — the shared base, not a copy
        (kept alongside the others; switch with ``use_adapter``, detach with
        ``remove_adapters``). While attached, every other backend on the same weights runs
        with the adapters disabled (``_adapter_context``), so it still sees the plain base."""
        from peft import PeftModel

        if not isinstance(self.model, PeftModel):
            base = self.model
            if WEIGHTS.adapter_host(base) is not None:  # another backend's adapters are there
                base = load_weights(self.path, self.device, self.dtype)  # a private copy
            self.model = PeftModel.from_pretrained(base, str(path), adapter_name=adapter_name)
            self.model.eval()
            WEIGHTS.attach_host(self.model)
        else:
            self.model.load_adapter(str(path), adapter_name=adapter_name)
        self._adapters[adapter_name] = directory_hash(path)

    def remove_adapters(self) -> None:
        """Detach every adapter: the shared base gets its own layers back (not merged) and
        the adapters' memory is released."""
        from peft import PeftModel

        if isinstance(self.model, PeftModel):
            WEIGHTS.detach_host(self.model)
            self.model.unload()  # in place: the base's own layers are back
            self.model = WEIGHTS.get(self.path, self.device, self.dtype)
        self._adapters, self.adapter = {}, None

    def adapter_hash(self, adapter_name: str) -> str | None:
        """The content hash of an attached adapter; None when none of that name is attached."""
        return self._adapters.get(adapter_name)

    def merged(self, adapter_name: str, path: str | Path) -> HFBackend:
        """A sibling backend with the adapter merged into its own copy of the base weights:
        same outputs and cache keys as ``use_adapter``, without LoRA's extra matmuls."""
        from peft import PeftModel

        base = load_weights(self.path, self.device, self.dtype)
        sibling = copy.copy(self)
        sibling.model = PeftModel.from_pretrained(base, str(path)).merge_and_unload().eval()
        sibling._adapters = {adapter_name: directory_hash(path)}
        sibling.adapter = adapter_name
        return sibling

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
        host = WEIGHTS.adapter_host(self.model)  # another backend attached adapters here
        if host is not None and host is not self.model:
            return host.disable_adapter()
        return contextlib.nullcontext()

    @contextlib.contextmanager
    def computing(self) -> Iterator[None]:
        """What every forward pass on this model runs under: the device's compute lock, and
        the active adapter (the plain base, adapters disabled, when none is active)."""
        with self._lock, self._adapter_context():
            yield

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
    def generate(self, requests: list[ChatRequest], on_done: OnDone = None) -> list[Completion]:
        """Generate for every request. Requests with the same messages and sampling (the inputs
        for each tool of one step differ only in the assistant's prefill) share one prefix
        forward; the rest are batched by sampling parameters. A greedy batch reads the prefix
        its prompts share (the system prompt) once too: its rows decode on that cache
        (``_generate_shared``) instead of ``model.generate`` on left-padded prompts."""
        results: list[Completion | None] = [None] * len(requests)
        shared: dict[tuple, list[int]] = {}
        for i, req in enumerate(requests):
            shared.setdefault((_sampling(req), req.messages), []).append(i)
        batched: dict[tuple, list[int]] = {}
        with self._lock:
            for (sampling, _), indices in shared.items():
                if len(indices) == 1:
                    batched.setdefault(sampling, []).append(indices[0])
                    continue
                out = self._generate_shared([requests[i] for i in indices])
                for i, done in zip(indices, out, strict=True):
                    results[i] = done
                    if on_done is not None:
                        on_done(i, done)
            for indices in batched.values():
                for start in range(0, len(indices), self.batch_size):
                    chunk = indices[start : start + self.batch_size]
                    greedy = requests[chunk[0]].temperature == 0
                    decode = self._generate_shared if greedy else self._generate_batch
                    out = decode([requests[i] for i in chunk])
                    for i, done in zip(chunk, out, strict=True):
                        results[i] = done
                        if on_done is not None:
                            on_done(i, done)
        return [r for r in results if r is not None]

    def next_tokens(
        self, logits: torch.Tensor, request: ChatRequest, rng: torch.Generator | None
    ) -> torch.Tensor:
        """The next token of each row: argmax without ``rng``, else sampled (temperature,
        top-p) from ``rng``."""
        if rng is None:
            return logits.argmax(dim=-1)
        probs = torch.softmax(logits.float() / request.temperature, dim=-1)
        if request.top_p < 1.0:
            ordered, index = probs.sort(dim=-1, descending=True)
            drop = ordered.cumsum(dim=-1) - ordered > request.top_p
            ordered[drop] = 0.0
            probs = torch.zeros_like(probs).scatter(-1, index, ordered)
        return torch.multinomial(probs.cpu(), 1, generator=rng).squeeze(-1).to(logits.device)

    @torch.inference_mode()
    def _generate_shared(self, batch: list[ChatRequest]) -> list[Completion]:
        """Decode several continuations of one shared prompt prefix, computing it once. Greedy
        rows of very different lengths (a long observation in one trajectory) are read and
        decoded in groups of similar length on that one prefix (``length_groups``); sampled
        rows stay one group (one generator draws every row's tokens)."""
        first = batch[0]
        rows = [
            self.tokenizer(self.prompt_text(r), add_special_tokens=False).input_ids for r in batch
        ]
        results: list[Completion | None] = [None] * len(rows)
        with self._adapter_context():
            # a group costs a pass and its decoding steps (each ~ a pass's fixed work)
            prefix, groups = prefix_groups(
                self.model,
                rows,
                self.device,
                GROUP_OVERHEAD_TOKENS * first.max_new_tokens,
                grouped=first.temperature == 0,
            )
            for group in groups:
                done = self._decode_on(first, [rows[i] for i in group], prefix)
                for i, completion in zip(group, done, strict=True):
                    results[i] = completion
        return [r for r in results if r is not None]

    def _decode_on(
        self, first: ChatRequest, rows: list[list[int]], prefix: Prefix | None
    ) -> list[Completion]:
        """Read the rows' own tokens on ``prefix`` (right-padded), then decode them together."""
        # suffixes are right-padded: a row's next-token logits sit at its last real token,
        # not at the last column; only those columns are projected on the vocabulary
        offset = prefix.length if prefix is not None else 0
        ends = [len(r) - offset - 1 for r in rows]
        keep = sorted(set(ends))
        fwd = shared_forward(
            self.model,
            rows,
            self.tokenizer.pad_token_id,
            self.device,
            False,
            keep=keep,
            prefix=prefix,
        )
        # one generator for the whole group: same seed => same samples, run after run
        rng = torch.Generator().manual_seed(first.seed) if first.temperature > 0 else None
        index = torch.arange(len(rows))
        column = torch.tensor([keep.index(e) for e in ends])
        tokens = self.next_tokens(fwd.logits[index, column], first, rng)
        eos = {self.tokenizer.eos_token_id, self.tokenizer.pad_token_id}
        generated: list[list[int]] = [[] for _ in rows]
        finished = [False] * len(rows)
        # new tokens are appended after the padding columns, so give their positions
        # explicitly: right after each row's real tokens, as if there were no padding
        positions = torch.tensor([fwd.prefix_len + n for n in fwd.lengths], device=self.device)
        # transformers renamed past_key_values to cache: pass whichever this model takes
        mask, cache, arg = fwd.mask, fwd.cache, cache_arg(self.model)
        for step in range(first.max_new_tokens):
            # record the tokens just sampled; finished rows stay in the batch (the cache's
            # shape is fixed) but whatever they produce from now on is ignored
            for i, t in enumerate(tokens.tolist()):
                if finished[i]:
                    continue
                if t in eos:
                    finished[i] = True
                    continue
                generated[i].append(t)
                # a stop string can span tokens: decode a short tail, not the whole row
                if first.stop and any(
                    stop in self.tokenizer.decode(generated[i][-8:]) for stop in first.stop
                ):
                    finished[i] = True
            # the token budget counts the first token too: no forward pass after the last
            if all(finished) or step == first.max_new_tokens - 1:
                break
            # every row attends to the token it is about to feed (padding stays masked)
            mask = torch.cat(
                [mask, torch.ones(len(rows), 1, dtype=mask.dtype, device=self.device)], dim=1
            )
            # one token per row, reusing the cache: the cost of a step is one column
            out = shared_prefix.forward(
                self.model,
                fwd.shared,
                input_ids=tokens[:, None],
                attention_mask=mask,
                position_ids=positions[:, None],
                use_cache=True,
                **{arg: cache},
            )
            cache, positions = getattr(out, arg), positions + 1
            tokens = self.next_tokens(out.logits[:, -1], first, rng)
        completions = []
        for row, tokens_out, done in zip(rows, generated, finished, strict=True):
            text = self.tokenizer.decode(tokens_out, skip_special_tokens=True)
            text, reason = cut_at_stop(text, first.stop, "stop" if done else "length")
            completions.append(
                Completion(
                    text,
                    prompt_tokens=len(row),
                    completion_tokens=len(tokens_out),
                    finish_reason=reason,
                )
            )
        return completions

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
            out = self.model.generate(**enc, **kwargs, **new_cache(self.model))
        new = out[:, enc["input_ids"].shape[1] :]  # left padding: every prompt ends at one column
        eos = {self.tokenizer.eos_token_id, self.tokenizer.pad_token_id}
        completions = []
        for row, mask in zip(new.tolist(), enc["attention_mask"].tolist(), strict=True):
            # rows that finished early are padded to the longest: cut at the first eos/pad
            n = next((j for j, t in enumerate(row) if t in eos), len(row))
            text = self.tokenizer.decode(row[:n], skip_special_tokens=True)
            text, reason = cut_at_stop(text, first.stop, "stop" if n < len(row) else "length")
            completions.append(
                Completion(text, prompt_tokens=sum(mask), completion_tokens=n, finish_reason=reason)
            )
        return completions
