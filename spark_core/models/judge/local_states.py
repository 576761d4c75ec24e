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

from spark_core.models.hf.growing_cache import growing_cache
from spark_core.models.hf.kv_session import KVSession
from spark_core.models.hf.prefix_cache import (
    Prefix,
    common_prefix_len,
    length_groups,
    run_suffixes,
)
from spark_core.models.hf.shared_prefix import SharedPrefix


def score_columns(lengths: list[int]) -> tuple[list[int], list[int]]:
    """For rows whose run part ends with the prompt's last token and the appended '1' (of
    ``lengths`` tokens): each row's prompt-end column, and the columns a pass keeps (the end,
    where P(first digit) is read, and the '1' after it, where P('0' | '1') is)."""
    ends = [n - 2 for n in lengths]
    return ends, sorted({c for e in ends for c in (e, e + 1)})


def read_columns(
    logits: torch.Tensor, ends: list[int], keep: list[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The logits at each row's prompt end and after its '1', from a pass that kept ``keep``."""
    column = {c: k for k, c in enumerate(keep)}
    index = torch.arange(len(ends))
    at_end = logits[index, torch.tensor([column[e] for e in ends])]
    after_one = logits[index, torch.tensor([column[e + 1] for e in ends])]
    return at_end.float().cpu(), after_one.float().cpu()


def _split(groups: list[list[int]], size: int) -> list[list[int]]:
    return [g[i : i + size] for g in groups for i in range(0, len(g), size)]


def _states_session(backend: Any, base: Prefix, parts: list[list[int]]) -> SharedPrefix | None:
    """Each state's own prompt part read in one pass on the rubric; None when none has one."""
    if not any(parts):
        return None
    rubric = SharedPrefix.whole(base.cache, len(parts))
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
) -> tuple[torch.Tensor, torch.Tensor]:
    """The next-token logits of every row at its prompt's end and after a '1' ([rows, vocab]
    each), its units (one state's candidates) read on ``base`` (the rubric, a start every row
    shares)."""
    backend = judge.backend
    model, device, pad = backend.model, backend.device, backend.tokenizer.pad_token_id
    rows = [r + [judge.digit_ids[1]] for r in rows]  # the '1' that splits 1 from 10
    at_end: list[torch.Tensor | None] = [None] * len(rows)
    after_one: list[torch.Tensor | None] = [None] * len(rows)
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
        rubric = SharedPrefix.whole(base.cache, len(members))
        levels = (rubric,) if states is None else (rubric, states.select(owner))
        for group in _split(length_groups([len(o) for o in own]), backend.batch_size):
            part = [own[j] for j in group]
            ends, keep = score_columns([len(p) for p in part])
            out, _, _ = run_suffixes(
                model,
                part,
                pad,
                device,
                [state_len[owner[j]] for j in group],
                growing_cache(model),
                tuple(level.select(group) for level in levels),
                keep,
            )
            for j, a, b in zip(group, *read_columns(out.logits, ends, keep), strict=True):
                at_end[members[j][1]], after_one[members[j][1]] = a, b
    return torch.stack(at_end), torch.stack(after_one)
