"""Forward passes that compute a shared prompt prefix once.

The candidates of a step share their prompt up to the candidate (the judge) or up to the
action name (the generator writing each tool's input). The prefix's KV cache is computed once
and only the right-padded suffixes are run on it: their attention reads the one copy
(``shared_prefix.py``; a model it does not support gets the prefix repeated for every row,
the rows' cache then holding prefix and suffix). Padding sits
after each row's real tokens and is masked, so a row's logits match a forward pass of that row
alone. Suffixes of very different lengths (a long search result beside a one-number
calculator output) run in groups of similar length on the one prefix (``length_groups``):
padded columns cost as much as real ones.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import torch

from spark_core.models.hf import shared_prefix
from spark_core.models.hf.growing_cache import detached_copy, growing_cache
from spark_core.models.hf.shared_prefix import SharedPrefix

# what one more forward pass costs, in padded suffix tokens: the pass's fixed work (30 layers'
# calls, reading the weights; copying the prefix's cache where it is repeated) against ~1 ms
# a token on 2 cores
GROUP_OVERHEAD_TOKENS = 48


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


def length_groups(lengths: list[int], overhead: int = GROUP_OVERHEAD_TOKENS) -> list[list[int]]:
    """Row indices in groups of similar length, each group one forward pass: the partition of
    the rows sorted by length that computes the fewest padded tokens, counting ``overhead``
    tokens per pass (an exact dynamic programme; rows of equal length keep their order)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    n = len(order)
    best = [0] + [0] * n  # best[j]: cost of the first j sorted rows
    cut = [0] * (n + 1)  # where the last group of the first j rows starts
    for j in range(1, n + 1):
        best[j], cut[j] = min(
            (best[i] + (j - i) * lengths[order[j - 1]] + overhead, i) for i in range(j)
        )
    groups, j = [], n
    while j:
        groups.append(order[cut[j] : j])
        j = cut[j]
    return groups[::-1]


@dataclass
class Prefix:
    """One row's KV cache of a prompt prefix, to run any number of suffix groups on."""

    tokens: list[int]
    cache: Any

    @property
    def length(self) -> int:
        return len(self.tokens)

    def repeated(self, rows: int) -> Any:
        """A cache of ``rows`` copies of the prefix; this one is left as it is."""
        cache = detached_copy(self.cache)
        cache.batch_repeat_interleave(rows)
        return cache


@torch.inference_mode()
def read_prefix(model: Any, tokens: list[int], device: str, base: Prefix | None = None) -> Prefix:
    """Read a prefix once; only its cache is kept (no position is projected on the
    vocabulary). ``base``: an already read start of ``tokens`` (the judge's system prompt,
    shared by every state), continued instead of read again."""
    arg = cache_arg(model)
    if base is not None and base.length < len(tokens) and tokens[: base.length] == base.tokens:
        ids = torch.tensor([tokens[base.length :]], device=device)
        cache = base.repeated(1)
        out = model(input_ids=ids, use_cache=True, logits_to_keep=1, **{arg: cache})
    else:
        ids = torch.tensor([tokens], device=device)
        out = model(input_ids=ids, use_cache=True, logits_to_keep=1, **new_cache(model))
    return Prefix(list(tokens), getattr(out, arg))


def prefix_groups(
    model: Any,
    rows: list[list[int]],
    device: str,
    overhead: int = GROUP_OVERHEAD_TOKENS,
    base: Prefix | None = None,
    grouped: bool = True,
) -> tuple[Prefix | None, list[list[int]]]:
    """The prefix the rows share, read once (continuing ``base``), and the rows in length
    groups to run on it (``length_groups``; one group when not ``grouped`` or nothing is
    shared)."""
    everything = [list(range(len(rows)))]
    shared = common_prefix_len(rows) if len(rows) > 1 else 0
    if not shared:
        return None, everything
    prefix = read_prefix(model, rows[0][:shared], device, base)
    if not grouped:
        return prefix, everything
    return prefix, length_groups([len(r) - shared for r in rows], overhead)


def new_cache(model: Any) -> dict[str, Any]:
    """The keyword argument that starts a forward pass (or ``generate``) on a cache that
    grows in place (``growing_cache.py``), under the installed transformers' name for it."""
    return {cache_arg(model): growing_cache(model)}


@dataclass
class SharedForward:
    """What a pass on a prefix leaves for further decoding: pass ``shared`` with every later
    forward on ``cache`` (``shared_prefix.forward``), with ``mask`` extended."""

    logits: torch.Tensor  # [rows, width, vocab] for the suffix positions
    cache: Any  # KV cache of the suffixes (and of the prefix when ``shared`` is None)
    mask: torch.Tensor  # [rows, width], or [rows, prefix + width] when ``shared`` is None
    lengths: list[int]  # real suffix length per row
    prefix_len: int
    shared: SharedPrefix | None = None


@torch.inference_mode()
def run_suffixes(
    model: Any,
    suffixes: list[list[int]],
    pad_id: int,
    device: str,
    starts: list[int],
    cache: Any,
    shared: Any = None,
    keep: list[int] | None = None,
    held: int = 0,
) -> tuple[Any, torch.Tensor, list[int]]:
    """One pass of right-padded ``suffixes`` on ``cache`` (and the prefixes ``shared`` reads
    in place), each row's positions from its ``starts``; ``held``: positions already in
    ``cache`` that every row sees (a prefix repeated there). ``keep``: the suffix columns
    whose logits are projected. The model's output, the attention mask, the real lengths."""
    lengths = [len(s) for s in suffixes]
    width = max(lengths)
    ids = torch.tensor([s + [pad_id] * (width - len(s)) for s in suffixes], device=device)
    mask = torch.tensor([[1] * (held + n) + [0] * (width - n) for n in lengths], device=device)
    positions = torch.tensor(starts, device=device)[:, None] + torch.arange(width, device=device)
    kwargs: dict[str, Any] = {"use_cache": True, cache_arg(model): cache}
    if keep is not None:
        kwargs["logits_to_keep"] = torch.tensor(keep, device=device)
    out = shared_prefix.forward(
        model, shared, input_ids=ids, attention_mask=mask, position_ids=positions, **kwargs
    )
    return out, mask, lengths


@torch.inference_mode()
def shared_forward(
    model: Any,
    rows: list[list[int]],
    pad_id: int,
    device: str,
    reuse_prefix: bool = True,
    keep: list[int] | None = None,
    prefix: Prefix | None = None,
) -> SharedForward:
    """``keep``: the suffix columns whose logits are read (the vocabulary projection is a
    fifth of a small model's compute per token: skip it elsewhere); ``logits[:, k]`` is then
    column ``keep[k]``. None: every column. ``prefix``: an already read prefix of every row
    (else the rows' common prefix is read here, when ``reuse_prefix``)."""
    if prefix is None and reuse_prefix and len(rows) > 1 and common_prefix_len(rows):
        prefix = read_prefix(model, rows[0][: common_prefix_len(rows)], device)
    n = prefix.length if prefix is not None else 0
    shared, held, cache = None, 0, growing_cache(model)
    if prefix is not None and shared_prefix.supported(model):
        shared = SharedPrefix.whole(prefix.cache, len(rows))
    elif prefix is not None:  # every row carries a copy of the prefix
        held, cache = n, prefix.repeated(len(rows))
    out, mask, lengths = run_suffixes(
        model, [r[n:] for r in rows], pad_id, device, [n] * len(rows), cache, shared, keep, held
    )
    return SharedForward(out.logits, getattr(out, cache_arg(model)), mask, lengths, n, shared)
