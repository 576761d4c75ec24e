"""A KV cache that writes new positions in place instead of concatenating.

transformers' ``DynamicLayer`` grows by ``torch.cat``: every decoding step copies each layer's
whole cache to append one column. On a CPU that copy, not the arithmetic, is most of a step:
a torch profile of the demo model decoding 16 rows on a ~420-token state put ``aten::cat`` at
46% of the step, the matrix products at 35% (``bench/decode.py``). ``GrowingLayer`` keeps
each layer in a buffer with ``SPARE`` free positions and writes the new columns into it; the
cache it hands to attention is a view of the filled part, so every value, and hence every
logit, is the one the concatenating cache gives.

Selecting or repeating rows (a fork of a session, a prefix read once for several rows)
copies each row straight into a new buffer with room to spare, so the next ``update`` writes
in place (transformers' own would copy the rows, and the update copy them again: a fork of
32 rows of ~450 tokens is ~0.7 GB). A cropped layer keeps its buffer and writes over the
dropped positions; anything else that replaces the tensors is adopted into a fresh buffer at
the next ``update``.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer

SPARE = 64  # free positions a (re)allocated buffer keeps: a decode of up to 64 tokens copies once


class GrowingLayer(DynamicLayer):
    _key_buffer: torch.Tensor | None = None
    _value_buffer: torch.Tensor | None = None

    def _owns(self, length: int) -> bool:
        """The layer's tensors are still the front of its own buffer (nothing replaced them
        since the last update; a crop leaves them there) and ``length`` more positions fit."""
        buf = self._key_buffer
        keys = self.keys
        return (
            buf is not None
            and keys.numel() > 0
            and keys.data_ptr() == buf.data_ptr()
            and keys.shape[:2] == buf.shape[:2]
            and keys.stride() == buf.stride()
            and keys.shape[-2] + length <= buf.shape[-2]
        )

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        held = self.keys.shape[-2] if self.keys.numel() else 0
        added = key_states.shape[-2]
        if not self._owns(added):
            shape = (*key_states.shape[:2], held + added + SPARE, key_states.shape[-1])
            keys, values = key_states.new_empty(shape), value_states.new_empty(shape)
            if held:
                keys[..., :held, :] = self.keys
                values[..., :held, :] = self.values
            self._key_buffer, self._value_buffer = keys, values
        assert self._key_buffer is not None and self._value_buffer is not None
        self._key_buffer[..., held : held + added, :] = key_states
        self._value_buffer[..., held : held + added, :] = value_states
        self.keys = self._key_buffer[..., : held + added, :]
        self.values = self._value_buffer[..., : held + added, :]
        return self.keys, self.values

    def _take_rows(self, rows: list[int]) -> None:
        """The layer's rows ``rows`` (repeats allowed), row by row into a new buffer with
        ``SPARE`` free positions (no intermediate copy of the whole selection)."""
        held = self.keys.shape[-2]
        shape = (len(rows), self.keys.shape[1], held + SPARE, self.keys.shape[-1])
        keys, values = self.keys.new_empty(shape), self.values.new_empty(shape)
        for j, i in enumerate(rows):
            keys[j, :, :held] = self.keys[i]
            values[j, :, :held] = self.values[i]
        self._key_buffer, self._value_buffer = keys, values
        self.keys, self.values = keys[..., :held, :], values[..., :held, :]

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.get_seq_length() > 0:
            self._take_rows(indices.tolist())

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self.get_seq_length() > 0:
            self._take_rows([i for i in range(self.keys.shape[0]) for _ in range(repeats)])

    def reset(self) -> None:
        self._key_buffer = self._value_buffer = None
        super().reset()


def growing_cache(model: Any) -> DynamicCache:
    """An empty cache for ``model`` (pass it to the first forward pass) whose full-attention
    layers grow in place; other layer kinds (sliding windows) stay transformers' own."""
    cache = DynamicCache(config=model.config)
    cache.layers = [
        GrowingLayer() if type(layer) is DynamicLayer else layer for layer in cache.layers
    ]
    return cache


def detached_copy(cache: DynamicCache) -> DynamicCache:
    """A copy of ``cache`` whose layers share the tensors but own no buffer: its first update
    writes into a buffer of its own, never into the original's (row selection and repetition
    take rows into new buffers anyway; a copy extended as it is must not write where the
    original would)."""
    out = copy.copy(cache)
    out.layers = [copy.copy(layer) for layer in cache.layers]
    for layer in out.layers:
        if isinstance(layer, GrowingLayer):
            layer._key_buffer = layer._value_buffer = None
    return out
