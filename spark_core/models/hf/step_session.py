"""A synthesis step on the local backend without reading any prompt twice.

A step writes one thought per question, then an input for each of the 9 candidate actions,
on a prompt that is the question's state plus that thought. Generated one call after the other,
every question's state was read twice (once for the thought, once as the candidates' shared
prefix) and the candidates' inputs were decoded nine rows at a time, one question after the
other. Here the thoughts of up to ``batch_size`` questions are decoded in one KV session; each
candidate's input prompt is tokenized exactly as before; it continues the longest run of
tokens it shares with its thought's session row (the state and, usually, the thought), read
in place from that session's cache (``shared_prefix.py``: no row copies its state), and only
the rest is fed and decoded — ``batch_size`` candidate rows at a time, across questions. The
requests, their cache keys and their token sequences are the ones of the two separate calls.
"""

from __future__ import annotations

from typing import Any

import torch

from spark_core.models.hf import shared_prefix
from spark_core.models.hf.backend import cut_at_stop
from spark_core.models.hf.kv_session import KVSession
from spark_core.models.hf.shared_prefix import SharedPrefix
from spark_core.models.requests import ChatRequest, Completion, OnDone


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


Draw = tuple[list[int], ChatRequest, "torch.Generator | None"]
"""Session rows that draw their tokens together (one request's sampling, one generator)."""


def _decode(
    backend: Any, session: KVSession, draws: list[Draw], continue_after: bool
) -> tuple[list[list[int]], list[bool]]:
    """Decode every row up to its request's ``max_new_tokens``, a stop string or EOS: (tokens
    of each row, whether it ended by itself). Each draw's live rows pick their tokens from its
    generator, in row order, at every step: what decoding that draw alone would pick. With
    ``continue_after`` every token is fed, so the cache holds exactly the text written.
    Otherwise a session whose rows continue shared prefixes drops its finished rows (their own
    cache is all that is copied)."""
    tok = backend.tokenizer
    eos = {tok.eos_token_id, tok.pad_token_id}
    rows = session.rows
    limit = [0] * rows
    for members, request, _ in draws:
        for i in members:
            limit[i] = request.max_new_tokens
    compact = not continue_after and session.shared is not None
    generated: list[list[int]] = [[] for _ in range(rows)]
    done = [False] * rows
    order = list(range(rows))  # the session's rows, by the row each one decodes
    for step in range(max(limit, default=0)):
        at = {i: j for j, i in enumerate(order)}
        feed: dict[int, list[int]] = {}
        for members, request, rng in draws:
            live = [i for i in members if not done[i] and step < limit[i]]
            if not live:
                continue
            picks = backend.next_tokens(session.last[[at[i] for i in live]], request, rng)
            for i, token in zip(live, picks.tolist(), strict=True):
                if token in eos:
                    done[i] = True
                    continue
                generated[i].append(token)
                feed[i] = [token]
                if request.stop and any(s in tok.decode(generated[i][-8:]) for s in request.stop):
                    done[i] = True
        if not feed:
            break
        # the token budget counts the first token too: no forward pass after a row's last
        going = [i for i in order if not done[i] and step + 1 < limit[i]]
        if not continue_after:
            if not going:
                break
            if compact and len(going) < len(order):
                session.keep_rows([at[i] for i in going])
                order, at = going, {i: j for j, i in enumerate(going)}
        session.feed([feed.get(i, []) for i in order])
    return generated, done


def _completion(backend: Any, request: ChatRequest, prompt: int, ids: list[int], ended: bool):
    text = backend.tokenizer.decode(ids, skip_special_tokens=True)
    text, reason = cut_at_stop(text, request.stop, "stop" if ended else "length")
    return Completion(text, prompt_tokens=prompt, completion_tokens=len(ids), finish_reason=reason)


class StepSession:
    """Thoughts first (``thoughts``), then the candidates' inputs (``inputs``) on the kept
    sessions; both have the ``compute(items, on_done)`` shape of a backend's generate."""

    def __init__(self, backend: Any):
        self.backend = backend
        # a thought request's messages -> (its session, its row, the row's visible tokens)
        self.rows: dict[tuple, tuple[KVSession, int, list[int]]] = {}

    def _ids(self, request: ChatRequest) -> list[int]:
        text = self.backend.prompt_text(request)
        return self.backend.tokenizer(text, add_special_tokens=False).input_ids

    def _rng(self, request: ChatRequest) -> torch.Generator | None:
        return torch.Generator().manual_seed(request.seed) if request.temperature > 0 else None

    def thoughts(self, requests: list[ChatRequest], on_done: OnDone = None) -> list[Completion]:
        b = self.backend
        out: list[Completion] = []
        with b.computing():
            for start in range(0, len(requests), b.batch_size):
                chunk = requests[start : start + b.batch_size]
                prompts = [self._ids(r) for r in chunk]
                session = KVSession(b.model, b.tokenizer.pad_token_id, b.device)
                session.start(prompts)
                draw = (list(range(len(chunk))), chunk[0], self._rng(chunk[0]))
                generated, ended = _decode(b, session, [draw], True)
                for row, (r, ids) in enumerate(zip(chunk, generated, strict=True)):
                    self.rows[r.messages] = (session, row, prompts[row] + ids)
                    done = _completion(b, r, len(prompts[row]), ids, ended[row])
                    if on_done is not None:
                        on_done(len(out), done)
                    out.append(done)
        return out

    def inputs(self, requests: list[ChatRequest], on_done: OnDone = None) -> list[Completion]:
        """Each request on its thought's session row when there is one (else the plain
        ``generate``). A session's candidates draw ``batch_size`` rows at a time, as separate
        calls would; they decode together where they read the session's cache in place."""
        b = self.backend
        results: list[Completion | None] = [None] * len(requests)
        by_session: dict[int, list[int]] = {}
        elsewhere = []
        for i, r in enumerate(requests):
            if r.messages in self.rows:
                by_session.setdefault(id(self.rows[r.messages][0]), []).append(i)
            else:
                elsewhere.append(i)
        # on a fork every row copies its state: batch_size rows at a time
        size = len(requests) if shared_prefix.supported(b.model) else b.batch_size
        with b.computing():
            for indices in by_session.values():
                for part in [indices[s : s + size] for s in range(0, len(indices), size)]:
                    done = self._decode_inputs(requests, part)
                    for i, completion in zip(part, done, strict=True):
                        results[i] = completion
                        if on_done is not None:
                            on_done(i, completion)
        if elsewhere:
            relay = None if on_done is None else (lambda j, c: on_done(elsewhere[j], c))
            done = b.generate([requests[i] for i in elsewhere], relay)
            for i, c in zip(elsewhere, done, strict=True):
                results[i] = c
        return [r for r in results if r is not None]

    def _decode_inputs(self, requests: list[ChatRequest], part: list[int]) -> list[Completion]:
        """The inputs of ``part`` (candidates on one thought session), each ``batch_size``
        of them drawing from one generator seeded by the first's request."""
        session = self.rows[requests[part[0]].messages][0]
        owners = [self.rows[requests[i].messages][1] for i in part]
        prompts, feed, keeps, drops = [], [], [], []
        for i in part:
            ids = self._ids(requests[i])
            visible = self.rows[requests[i].messages][2]
            keeps.append(min(common_prefix(visible, ids), len(ids) - 1))  # one token to feed
            drops.append(len(visible) - keeps[-1])
            prompts.append(ids)
            feed.append(ids[keeps[-1] :])
        rows = self._continuing(session, owners, keeps, drops)
        rows.feed(feed)
        size = self.backend.batch_size
        draws = [
            (
                list(range(s, min(s + size, len(part)))),
                requests[part[s]],
                self._rng(requests[part[s]]),
            )
            for s in range(0, len(part), size)
        ]
        generated, ended = _decode(self.backend, rows, draws, False)
        return [
            _completion(self.backend, requests[i], len(p), ids, e)
            for i, p, ids, e in zip(part, prompts, generated, ended, strict=True)
        ]

    def _continuing(
        self, session: KVSession, owners: list[int], keeps: list[int], drops: list[int]
    ) -> KVSession:
        """Rows that continue their thought rows' first ``keeps`` visible tokens (the last
        ``drops`` hidden): reading the thought session's cache in place (``shared_prefix``),
        or, where the model's attention is not supported there, on a fork (a copy of every
        row, rolled back)."""
        b = self.backend
        if not shared_prefix.supported(b.model):
            fork = session.fork(owners)
            for row, drop in enumerate(drops):
                fork.retract(row, drop)
            return fork
        visible = session.mask[owners].bool()
        for row, keep in enumerate(keeps):
            visible[row, visible[row].nonzero().flatten()[keep:]] = False
        shared = SharedPrefix.of_cache(session.cache, owners, visible)
        return KVSession.continuing(b.model, b.tokenizer.pad_token_id, b.device, shared, keeps)
