"""The local judge's candidates of many states in a few forward passes.

In ``prefix`` mode the local judge reads the rubric once and each state's prompt once. Its
candidates used to run state by state, on a copy of their state's cache: ~40 passes for the
demo's 14 states, each a few rows of ~50 tokens, where a pass's fixed cost (reading the weights,
30 layers of small products) was most of its time. Here a chunk of states (``batch_size`` of
them) is read in one pass that continues the rubric, and all their candidates run in length
groups of up to ``batch_size`` rows, each row attending the rubric and its own state where
they lie (``shared_prefix``, two levels) — the same prompt tokens, read once.
"""

from __future__ import annotations

from typing import Any

import torch

from spark_core.models.hf import shared_prefix
from spark_core.models.hf.growing_cache import growing_cache
from spark_core.models.hf.kv_session import KVSession
from spark_core.models.hf.prefix_cache import (
    Prefix,
    cache_arg,
    common_prefix_len,
    length_groups,
)
from spark_core.models.hf.shared_prefix import SharedPrefix


def _split(groups: list[list[int]], size: int) -> list[list[int]]:
    return [g[i : i + size] for g in groups for i in range(0, len(g), size)]


def _states_session(backend: Any, base: Prefix, parts: list[list[int]]) -> SharedPrefix | None:
    """Each state's own prompt part read in one pass on the rubric; None when none has one."""
    if not any(parts):
        return None
    rubric = SharedPrefix.of_cache(
        base.cache, [0] * len(parts), torch.ones(len(parts), base.length, dtype=torch.bool)
    )
    session = KVSession.continuing(
        backend.model,
        backend.tokenizer.pad_token_id,
        backend.device,
        rubric,
        [base.length] * len(parts),
    )
    session.extend(parts)
    return SharedPrefix.of_cache(session.cache, list(range(len(parts))), session.mask.bool())


@torch.inference_mode()
def score_states(
    judge: Any, rows: list[list[int]], units: list[list[int]], base: Prefix
) -> list[tuple[torch.Tensor, torch.Tensor] | None]:
    """The next-token logits (at the prompt's end, and after a '1') of every row, its units
    (one state's candidates) read on ``base`` (the rubric, a start every row shares)."""
    backend = judge.backend
    model, device = backend.model, backend.device
    pad, arg = backend.tokenizer.pad_token_id, cache_arg(model)
    rows = [r + [judge.digit_ids[1]] for r in rows]  # the '1' that splits 1 from 10
    out: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * len(rows)
    for start in range(0, len(units), backend.batch_size):
        chunk = units[start : start + backend.batch_size]
        # a state's prompt: what its candidates share, up to two tokens before the shortest
        # ends (the prompt's last token and the '1' run with the candidate)
        state_len = [
            min(common_prefix_len([rows[i] for i in u]), min(len(rows[i]) for i in u) - 2)
            if len(u) > 1
            else base.length
            for u in chunk
        ]
        state_len = [max(n, base.length) for n in state_len]
        states = _states_session(
            backend,
            base,
            [rows[u[0]][base.length : n] for u, n in zip(chunk, state_len, strict=True)],
        )
        members = [(k, i) for k, u in enumerate(chunk) for i in u]
        owner = [k for k, _ in members]
        own = [rows[i][state_len[k] :] for k, i in members]
        rubric = SharedPrefix.of_cache(
            base.cache, [0] * len(members), torch.ones(len(members), base.length, dtype=torch.bool)
        )
        levels = (rubric,) if states is None else (rubric, states.select(owner))
        groups = _split(length_groups([len(o) for o in own]), backend.batch_size)
        for group in groups:
            part = [own[j] for j in group]
            ends = [len(p) - 2 for p in part]  # the prompt's last token, in the row's own part
            keep = sorted({c for e in ends for c in (e, e + 1)})
            width = max(len(p) for p in part)
            ids = torch.tensor([p + [pad] * (width - len(p)) for p in part], device=device)
            mask = torch.tensor([[1] * len(p) + [0] * (width - len(p)) for p in part])
            first = torch.tensor([state_len[owner[j]] for j in group])
            positions = first[:, None] + torch.arange(width)[None, :]
            fwd = shared_prefix.forward(
                model,
                tuple(level.select(group) for level in levels),
                input_ids=ids,
                attention_mask=mask.to(device),
                position_ids=positions.to(device),
                use_cache=True,
                logits_to_keep=torch.tensor(keep, device=device),
                **{arg: growing_cache(model)},
            )
            column = {c: k for k, c in enumerate(keep)}
            index = torch.arange(len(part))
            at_end = fwd.logits[index, torch.tensor([column[e] for e in ends])]
            after_one = fwd.logits[index, torch.tensor([column[e + 1] for e in ends])]
            for j, a, b in zip(group, at_end.float().cpu(), after_one.float().cpu(), strict=True):
                out[members[j][1]] = (a, b)
    return out
