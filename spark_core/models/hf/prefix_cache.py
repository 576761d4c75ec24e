"""Forward passes that compute a shared prompt prefix once.

The candidates of a step share their prompt up to the candidate (the judge) or up to the
action name (the generator writing each tool's input). The prefix's KV cache is computed once,
repeated for every row, and only the right-padded suffixes are run on top of it. Padding sits
after each row's real tokens and is masked, so a row's logits match a forward pass of that row
alone.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import torch


def common_prefix_len(rows: list[list[int]]) -> int:
    """Length of the shared token prefix, leaving every row at least one token of its own."""
    shortest = min(len(r) for r in rows)
    n = 0
    while n < shortest - 1 and all(r[n] == rows[0][n] for r in rows):
        n += 1
    return n


def cache_arg(model: Any) -> str:
    """transformers 5.x names the KV cache argument ``cache``; earlier releases
    ``past_key_values``. Support both."""
    base = getattr(model, "get_base_model", lambda: model)()
    params = inspect.signature(base.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


@dataclass
class SharedForward:
    logits: torch.Tensor  # [rows, width, vocab] for the suffix positions
    cache: Any  # KV cache holding prefix + suffixes, for further decoding
    mask: torch.Tensor  # [rows, prefix + width]
    lengths: list[int]  # real suffix length per row
    prefix_len: int


@torch.inference_mode()
def shared_forward(
    model: Any,
    rows: list[list[int]],
    pad_id: int,
    device: str,
    reuse_prefix: bool = True,
    keep: list[int] | None = None,
) -> SharedForward:
    """``keep``: the suffix columns whose logits are read (the vocabulary projection is a
    fifth of a small model's compute per token: skip it elsewhere); ``logits[:, k]`` is then
    column ``keep[k]``. None: every column."""
    arg = cache_arg(model)
    prefix_len = common_prefix_len(rows) if reuse_prefix and len(rows) > 1 else 0
    kwargs: dict[str, Any] = {"use_cache": True}
    if keep is not None:
        kwargs["logits_to_keep"] = torch.tensor(keep, device=device)
    if prefix_len:
        prefix = torch.tensor([rows[0][:prefix_len]], device=device)
        # only its cache is read: project no position on the vocabulary
        cache = getattr(model(input_ids=prefix, use_cache=True, logits_to_keep=1), arg)
        cache.batch_repeat_interleave(len(rows))
        kwargs[arg] = cache
    suffixes = [r[prefix_len:] for r in rows]
    lengths = [len(s) for s in suffixes]
    width = max(lengths)
    ids = torch.tensor([s + [pad_id] * (width - len(s)) for s in suffixes], device=device)
    suffix_mask = torch.tensor([[1] * n + [0] * (width - n) for n in lengths], device=device)
    mask = torch.cat(
        [torch.ones(len(rows), prefix_len, dtype=suffix_mask.dtype, device=device), suffix_mask],
        dim=1,
    )
    positions = torch.arange(prefix_len, prefix_len + width, device=device).expand(len(rows), -1)
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, **kwargs)
    return SharedForward(out.logits, getattr(out, arg), mask, lengths, prefix_len)
