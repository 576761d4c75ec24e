"""Incremental decoding over one KV cache, with a length of its own for every row.

Constrained action choice needs the model to read a state once and then continue it in
several ways: write a thought, score every action name, append the chosen one and write its
input. ``KVSession`` keeps the batch's cache, attention mask and next position per row, so
each row can be extended by its own tokens (right-padded, padding masked), rolled back (its
last tokens masked out), or forked into copies for candidate scoring — without ever running
the prompt again. A row's logits match a forward pass of that row's visible tokens alone.
"""

from __future__ import annotations

from typing import Any

import torch

from spark_core.models.hf import shared_prefix
from spark_core.models.hf.growing_cache import detached_copy, growing_cache
from spark_core.models.hf.prefix_cache import cache_arg, common_prefix_len, new_cache
from spark_core.models.hf.shared_prefix import SharedPrefix

SHARED_PREFIX_MIN = 32  # shorter shared prefixes are read with the rows (one pass is cheaper)


class KVSession:
    def __init__(self, model: Any, pad_id: int, device: str):
        self.model = model
        self.pad_id = pad_id
        self.device = device
        self.arg = cache_arg(model)
        self.cache: Any = None
        self.mask = torch.zeros(0, 0, dtype=torch.long)
        self.next_pos = torch.zeros(0, dtype=torch.long)
        self.last = torch.zeros(0)  # [rows, vocab]: logits after each row's last visible token
        self.step_logits = torch.zeros(0)  # [rows, width, vocab] of the latest ``feed``
        # prefixes the rows continue, read in place (``continuing``); the cache, the mask and
        # the positions are then the rows' own tokens only
        self.shared: SharedPrefix | None = None

    @classmethod
    def continuing(
        cls, model: Any, pad_id: int, device: str, shared: SharedPrefix, positions: list[int]
    ) -> KVSession:
        """An empty session whose rows continue ``shared``'s prefixes (each row's visible
        prefix ends at its position): feed it the rows' own tokens. Unlike a fork, no row
        copies its prefix's cache."""
        session = cls(model, pad_id, device)
        session.shared = shared
        session.cache = growing_cache(model)
        session.mask = torch.zeros(len(positions), 0, dtype=torch.long)
        session.next_pos = torch.tensor(positions, dtype=torch.long)
        vocab = model.get_output_embeddings().weight.shape[0]
        session.last = torch.zeros(len(positions), vocab)
        return session

    @property
    def rows(self) -> int:
        return int(self.mask.shape[0])

    @torch.inference_mode()
    def start(self, rows: list[list[int]]) -> torch.Tensor:
        """Read the prompts; returns the next-token logits. Prompts that share a long prefix
        (the system prompt every state carries) read it once: its cache is computed for one
        row, repeated, and only each row's own tokens run on top of it (right-padded)."""
        shared = common_prefix_len(rows) if len(rows) > 1 else 0
        if shared >= SHARED_PREFIX_MIN:
            return self._start_shared(rows, shared)
        width = max(len(r) for r in rows)
        ids = torch.tensor([[self.pad_id] * (width - len(r)) + r for r in rows])
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        out = self.model(
            input_ids=ids.to(self.device),
            attention_mask=mask.to(self.device),
            position_ids=positions.to(self.device),
            use_cache=True,
            logits_to_keep=1,  # the vocabulary projection only where it is read
            **new_cache(self.model),
        )
        self.cache = getattr(out, self.arg)
        self.mask, self.next_pos = mask, mask.sum(-1)
        self.last = out.logits[:, -1].float()
        return self.last

    def _start_shared(self, rows: list[list[int]], shared: int) -> torch.Tensor:
        prefix = torch.tensor([rows[0][:shared]], device=self.device)
        out = self.model(
            input_ids=prefix, use_cache=True, logits_to_keep=1, **new_cache(self.model)
        )
        self.cache = getattr(out, self.arg)
        self.cache.batch_repeat_interleave(len(rows))
        self.mask = torch.ones(len(rows), shared, dtype=torch.long)
        self.next_pos = torch.full((len(rows),), shared, dtype=torch.long)
        self.last = out.logits[:, -1].float().expand(len(rows), -1)
        return self._feed([r[shared:] for r in rows], keep_all=False)

    @torch.inference_mode()
    def feed(self, tokens: list[list[int]]) -> torch.Tensor:
        """Append each row's tokens (a row may get none); returns the updated last logits."""
        return self._feed(tokens, keep_all=True)

    def _feed(self, tokens: list[list[int]], keep_all: bool) -> torch.Tensor:
        """``keep_all``: every fed position's logits are kept (``step_logits``, which forks
        read); otherwise only each row's last position is projected on the vocabulary."""
        lengths = [len(t) for t in tokens]
        width = max(lengths)
        if width == 0:
            return self.last
        ids = torch.tensor([t + [self.pad_id] * (width - len(t)) for t in tokens])
        new_mask = torch.tensor([[1] * n + [0] * (width - n) for n in lengths])
        mask = torch.cat([self.mask, new_mask], dim=1)
        positions = self.next_pos[:, None] + torch.arange(width)[None, :]
        ends = sorted({n - 1 for n in lengths if n})  # the positions whose logits are read
        out = shared_prefix.forward(
            self.model,
            self.shared,
            input_ids=ids.to(self.device),
            attention_mask=mask.to(self.device),
            position_ids=positions.to(self.device),
            use_cache=True,
            logits_to_keep=0 if keep_all else torch.tensor(ends, device=self.device),
            **{self.arg: self.cache},
        )
        self.cache, self.mask = getattr(out, self.arg), mask
        self.next_pos = self.next_pos + torch.tensor(lengths)
        logits = out.logits.float()
        if keep_all:
            self.step_logits = logits
        column = {p: (p if keep_all else k) for k, p in enumerate(ends)}
        last = self.last.clone()
        for i, n in enumerate(lengths):
            if n:
                last[i] = logits[i, column[n - 1]]
        self.last = last
        return last

    @torch.inference_mode()
    def extend(self, tokens: list[list[int]]) -> torch.Tensor:
        """``feed``, projecting only each row's last position on the vocabulary (a prompt
        read for its cache, not its logits)."""
        return self._feed(tokens, keep_all=False)

    @torch.inference_mode()
    def peek(self, tokens: list[list[int]]) -> torch.Tensor:
        """The logits over each row's ``tokens`` as ``feed`` computes them ([rows, width,
        vocab]), leaving the session exactly as it was: the fed columns are cropped off the
        cache (no copy of any row, unlike a fork)."""
        width = max(len(t) for t in tokens)
        if width == 0:
            return self.last.new_zeros(self.rows, 0, self.last.shape[-1])
        mask, next_pos, last = self.mask, self.next_pos, self.last
        self._feed(tokens, keep_all=True)
        self.cache.crop(-width)
        self.mask, self.next_pos, self.last = mask, next_pos, last
        return self.step_logits

    @torch.inference_mode()
    def retract(self, row: int, n: int) -> None:
        """Hide the row's last ``n`` visible tokens; later tokens take their positions.
        The row's last logits are stale afterwards: feed it before reading them."""
        if n <= 0:
            return
        visible = self.mask[row].nonzero().flatten()
        if self.shared is not None and n > len(visible):
            raise ValueError(
                f"cannot roll row {row} back {n} tokens: it has {len(visible)} of its own, "
                "and the prefix it continues is shared (fork a session that holds it instead)"
            )
        self.mask[row, visible[-n:]] = 0
        self.next_pos[row] -= n

    @torch.inference_mode()
    def keep_rows(self, rows: list[int]) -> None:
        """Drop every row but ``rows`` (in that order) — finished rows stop costing a forward
        pass. Cheap on a session that ``continuing`` made: its cache is the rows' own tokens."""
        index = torch.tensor(rows)
        self.cache.batch_select_indices(index.to(self.device))
        self.mask, self.next_pos, self.last = (
            self.mask[index],
            self.next_pos[index],
            self.last[index],
        )
        if self.shared is not None:
            self.shared = self.shared.select(rows)

    def fork(self, rows: list[int]) -> KVSession:
        """A new session holding copies of the given rows (a row may repeat); this session is
        unchanged (the copy selects its rows into tensors of its own and owns no buffer:
        ``growing_cache.detached_copy``)."""
        forked = KVSession(self.model, self.pad_id, self.device)
        cache = detached_copy(self.cache)
        cache.batch_select_indices(torch.tensor(rows, device=self.device))
        index = torch.tensor(rows)
        forked.cache = cache
        forked.shared = None if self.shared is None else self.shared.select(rows)
        forked.mask, forked.next_pos = self.mask[index], self.next_pos[index]
        forked.last = self.last[index]
        return forked
