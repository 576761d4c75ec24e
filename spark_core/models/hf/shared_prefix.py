"""Attention over a prefix that many rows share, read from one copy of its KV cache.

The nine candidates of a state continue the same ~400-token prompt (the judge scoring them, the
generator writing each one's input). Run as ordinary rows, each carries its own copy of that
prompt's cache: every copy is made (a fork, a repeated prefix) and then read again at every
layer of every decoding step — on a CPU that reading, not the arithmetic, is what a row costs
(a step at 16 rows: ~80 ms for the weights, ~6 ms a row, nearly all of it the row's cache).

Here the rows' cache holds only their own tokens; the prefixes (one per state, ``SharedPrefix``)
stay where they were computed, and attention scores each row's queries against its state's
prefix once per state (all of that state's rows and query heads in one call) and against its
own keys, and merges the two by their log-sum-exp — the softmax over the concatenation, so a
row's logits match the row run alone up to float rounding (the sums run in another order).
Positions continue each row's visible prefix.

Only the passes given a ``SharedPrefix`` take this path (``forward``): the attention function
is switched for that call alone, under the device's compute lock that every local forward
pass holds, and any other pass runs transformers' own SDPA unchanged.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, eager_mask

NAME = "spark_shared_prefix"


@dataclass
class SharedPrefix:
    """The prefixes (``keys``/``values`` per layer: [prefixes, kv heads, length, head dim])
    and, for every row of a pass, which prefix it continues (``owner``) and which of that
    prefix's positions it sees (``visible``: [rows, length] bool; padding and positions
    rolled back are hidden)."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    owner: list[int]
    visible: torch.Tensor

    def __post_init__(self) -> None:
        # the rows of each prefix, in order: one attention call per prefix and layer
        groups: dict[int, list[int]] = {}
        for row, prefix in enumerate(self.owner):
            groups.setdefault(prefix, []).append(row)
        self.groups = [(p, torch.tensor(rows)) for p, rows in groups.items()]
        self._masks: dict[tuple, torch.Tensor | None] = {}

    @classmethod
    def of_cache(cls, cache: Any, owner: list[int], visible: torch.Tensor) -> SharedPrefix:
        """The prefixes held in ``cache``'s rows (a session's, a prefix read once)."""
        layers = cache.layers
        return cls([la.keys for la in layers], [la.values for la in layers], owner, visible)

    @classmethod
    def whole(cls, cache: Any, rows: int) -> SharedPrefix:
        """One prefix (``cache``'s only row) that each of ``rows`` rows sees whole."""
        length = cache.layers[0].keys.shape[-2]
        return cls.of_cache(cache, [0] * rows, torch.ones(rows, length, dtype=torch.bool))

    def select(self, rows: list[int]) -> SharedPrefix:
        """The same prefixes for a subset of the rows (in the given order)."""
        return SharedPrefix(
            self.keys, self.values, [self.owner[r] for r in rows], self.visible[rows]
        )

    def query_mask(
        self, group: int, members: torch.Tensor, repeats: int, like: torch.Tensor
    ) -> torch.Tensor | None:
        """The additive mask of one prefix's queries ([1, 1, rows * repeats, length]: each
        row's query heads and positions in turn), None when they see all of it. The same for
        every layer of a pass: made once."""
        key = (group, repeats, like.dtype, like.device)
        if key not in self._masks:
            visible = self.visible[members].to(like.device)
            mask = None
            if not bool(visible.all()):
                hidden = ~visible[:, None, :].expand(-1, repeats, -1).reshape(
                    1, 1, -1, visible.shape[-1]
                )
                mask = torch.zeros(hidden.shape, dtype=like.dtype, device=like.device)
                mask = mask.masked_fill(hidden, torch.finfo(like.dtype).min)
            self._masks[key] = mask
        return self._masks[key]


def _attend(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: torch.Tensor | None,
    scale: float,
    fused: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention output and the log-sum-exp of its scores per query (what two partial
    attentions merge by). Masks are additive and finite (``finfo.min``): a query that sees
    nothing gets a log-sum-exp near ``finfo.min``, and so no weight in the merge. ``fused``
    (default: on a CPU) takes torch's CPU kernel; otherwise plain products, scores in float32."""
    if fused is None:
        fused = query.device.type == "cpu"
    if fused:
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            query, key, value, 0.0, False, attn_mask=mask, scale=scale
        )
        return out, lse
    scores = torch.matmul(query, key.transpose(-1, -2)).float() * scale
    if mask is not None:
        scores = scores + mask
    lse = torch.logsumexp(scores, dim=-1)
    weights = torch.exp(scores - lse[..., None]).to(value.dtype)
    return torch.matmul(weights, value), lse


def supported(model: Any) -> bool:
    """Plain full attention over a cache of full-attention layers: what ``forward`` computes.
    Sliding windows, soft-capped logits, value heads of another size or another attention
    kernel keep the repeated-cache path (their rows carry a copy of the prefix)."""
    config = getattr(model, "config", None)
    if config is None or getattr(config, "_attn_implementation", None) not in ("sdpa", "eager"):
        return False
    if getattr(config, "attn_logit_softcapping", None):
        return False
    if getattr(config, "v_head_dim", None) or getattr(config, "kv_lora_rank", None):
        return False  # values narrower than queries (latent attention): shapes assumed equal
    layer_types = getattr(config, "layer_types", None)
    if layer_types is None:  # no per-layer kinds: a sliding window, if any, is everywhere
        return not getattr(config, "sliding_window", None)
    return all(t == "full_attention" for t in layer_types)


def _on_prefix(
    shared: SharedPrefix, layer: int, q: torch.Tensor, queries: int, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention of every row's ``queries`` (per kv head) to its prefix, one call per prefix:
    output [rows, kv, queries, dim] and log-sum-exp [rows, kv, queries]."""
    rows, kv_heads, _, dim = q.shape
    keys, values = shared.keys[layer], shared.values[layer]
    out = q.new_empty(rows, kv_heads, queries, dim)
    lse = torch.empty(rows, kv_heads, queries, dtype=torch.float32, device=q.device)
    for p, members in shared.groups:
        n = len(members)
        # the prefix's rows' queries against its one copy: [1, kv, n * queries, dim]
        mq = q[members].transpose(0, 1).reshape(1, kv_heads, n * queries, dim)
        mask = shared.query_mask(p, members, queries, q)
        o, s = _attend(mq, keys[p][None], values[p][None], mask, scale)
        out[members] = o[0].view(kv_heads, n, queries, dim).transpose(0, 1)
        lse[members] = s[0].view(kv_heads, n, queries).transpose(0, 1).float()
    return out, lse


def _attention(
    module: Any,
    query: torch.Tensor,  # [rows, heads, width, dim]
    key: torch.Tensor,  # [rows, kv heads, own length, dim]: the rows' own cache
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,  # additive, [rows, 1, width, own length]
    scaling: float | None = None,
    dropout: float = 0.0,
    shared_prefix: SharedPrefix | tuple[SharedPrefix, ...] | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    if shared_prefix is None:  # a pass without prefixes: transformers' own SDPA
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    rows, heads, width, dim = query.shape
    kv_heads, own_length = key.shape[1], key.shape[-2]
    group = heads // kv_heads  # query heads per kv head (grouped-query attention)
    scale = dim**-0.5 if scaling is None else scaling
    # a kv head's query heads and positions as one run of queries: [rows, kv, group*width, dim]
    q = query.reshape(rows, kv_heads, group * width, dim)
    if attention_mask is None:  # no padding: causal, the block ends where the cache ends
        causal = torch.ones(width, own_length, dtype=torch.bool, device=query.device)
        hidden = ~causal.tril(own_length - width)
        attention_mask = torch.zeros(hidden.shape, dtype=query.dtype, device=query.device)
        attention_mask = attention_mask.masked_fill(hidden, torch.finfo(query.dtype).min)
        attention_mask = attention_mask.expand(rows, 1, width, own_length)
    own_mask = attention_mask[:, :, None].expand(rows, 1, group, width, own_length)
    own_out, own_lse = _attend(
        q, key, value, own_mask.reshape(rows, 1, group * width, own_length), scale
    )
    out, lse = own_out.float(), own_lse.float()
    levels = shared_prefix if isinstance(shared_prefix, tuple) else (shared_prefix,)
    for level in levels:  # e.g. a rubric every state continues, then each row's state
        prefix_out, prefix_lse = _on_prefix(level, module.layer_idx, q, group * width, scale)
        # one softmax over all the keys: each part weighted by its share of the mass
        merged = torch.logaddexp(lse, prefix_lse)
        out = out * torch.exp(lse - merged)[..., None]
        out = out + prefix_out.float() * torch.exp(prefix_lse - merged)[..., None]
        lse = merged
    out = out.to(query.dtype).view(rows, heads, width, dim).transpose(1, 2).contiguous()
    return out, None


AttentionInterface.register(NAME, _attention)
ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, eager_mask)


@contextlib.contextmanager
def _switched(model: Any) -> Iterator[None]:
    config = model.config
    before = config._attn_implementation
    config._attn_implementation = NAME
    try:
        yield
    finally:
        config._attn_implementation = before


def forward(
    model: Any, prefix: SharedPrefix | tuple[SharedPrefix, ...] | None, **kwargs: Any
) -> Any:
    """``model(**kwargs)``, its rows continuing ``prefix`` (None: an ordinary pass; a tuple:
    prefixes read one after the other, e.g. a rubric then each row's state). The cache in
    ``kwargs`` holds the rows' own tokens only; ``attention_mask`` covers them."""
    if prefix is None:
        return model(**kwargs)
    with _switched(model):
        return model(**kwargs, shared_prefix=prefix)
