"""A synthesis step on the local backend without reading any prompt twice.

A step writes one thought per question, then an input for each of the 9 candidate actions,
on a prompt that is the question's state plus that thought. Generated one call after the other,
every question's state was read twice (once for the thought, once as the candidates' shared
prefix) and the candidates' inputs were decoded nine rows at a time, one question after the
other. Here the thoughts of up to ``batch_size`` questions are decoded in one KV session; each
candidate's input prompt is tokenized exactly as before, the session row is rolled back to the
longest run of tokens it shares with it (the state and, usually, the thought), forked, fed the
rest and decoded — ``batch_size`` candidate rows at a time, across questions. The requests,
their cache keys and their token sequences are the ones of the two separate calls.
"""

from __future__ import annotations

from typing import Any

import torch

from spark_core.models.hf.backend import cut_at_stop
from spark_core.models.hf.kv_session import KVSession
from spark_core.models.requests import ChatRequest, Completion, OnDone


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _decode(
    backend: Any,
    session: KVSession,
    request: ChatRequest,
    rng: torch.Generator | None,
    continue_after: bool,
) -> tuple[list[list[int]], list[bool]]:
    """Decode every row up to ``request.max_new_tokens``, a stop string or EOS: (tokens of
    each row, whether it ended by itself). With ``continue_after`` every token is fed, so the
    cache holds exactly the text written."""
    tok = backend.tokenizer
    eos = {tok.eos_token_id, tok.pad_token_id}
    rows = session.rows
    generated: list[list[int]] = [[] for _ in range(rows)]
    done = [False] * rows
    for step in range(request.max_new_tokens):
        live = [i for i in range(rows) if not done[i]]
        if not live:
            break
        picks = backend.next_tokens(session.last[live], request, rng)
        feed: list[list[int]] = [[] for _ in range(rows)]
        for i, token in zip(live, picks.tolist(), strict=True):
            if token in eos:
                done[i] = True
                continue
            generated[i].append(token)
            feed[i] = [token]
            if request.stop and any(s in tok.decode(generated[i][-8:]) for s in request.stop):
                done[i] = True
        if not continue_after and (all(done) or step == request.max_new_tokens - 1):
            break
        session.feed(feed)
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
                generated, ended = _decode(b, session, chunk[0], self._rng(chunk[0]), True)
                for row, (r, ids) in enumerate(zip(chunk, generated, strict=True)):
                    self.rows[r.messages] = (session, row, prompts[row] + ids)
                    done = _completion(b, r, len(prompts[row]), ids, ended[row])
                    if on_done is not None:
                        on_done(len(out), done)
                    out.append(done)
        return out

    def inputs(self, requests: list[ChatRequest], on_done: OnDone = None) -> list[Completion]:
        """Each request on its thought's session row when there is one (else the plain
        ``generate``), ``batch_size`` rows at a time."""
        b = self.backend
        results: list[Completion | None] = [None] * len(requests)
        by_session: dict[int, list[int]] = {}
        elsewhere = []
        for i, r in enumerate(requests):
            if r.messages in self.rows:
                by_session.setdefault(id(self.rows[r.messages][0]), []).append(i)
            else:
                elsewhere.append(i)
        with b.computing():
            for indices in by_session.values():
                for start in range(0, len(indices), b.batch_size):
                    chunk = indices[start : start + b.batch_size]
                    for i, done in zip(chunk, self._decode_inputs(requests, chunk), strict=True):
                        results[i] = done
                        if on_done is not None:
                            on_done(i, done)
        if elsewhere:
            relay = None if on_done is None else (lambda j, c: on_done(elsewhere[j], c))
            done = b.generate([requests[i] for i in elsewhere], relay)
            for i, c in zip(elsewhere, done, strict=True):
                results[i] = c
        return [r for r in results if r is not None]

    def _decode_inputs(self, requests: list[ChatRequest], chunk: list[int]) -> list[Completion]:
        session = self.rows[requests[chunk[0]].messages][0]
        fork = session.fork([self.rows[requests[i].messages][1] for i in chunk])
        prompts, feed = [], []
        for row, i in enumerate(chunk):
            ids = self._ids(requests[i])
            visible = self.rows[requests[i].messages][2]
            keep = min(common_prefix(visible, ids), len(ids) - 1)  # at least one token to feed
            fork.retract(row, len(visible) - keep)
            prompts.append(ids)
            feed.append(ids[keep:])
        fork.feed(feed)
        first = requests[chunk[0]]
        generated, ended = _decode(self.backend, fork, first, self._rng(first), False)
        return [
            _completion(self.backend, requests[i], len(p), ids, e)
            for i, p, ids, e in zip(chunk, prompts, generated, ended, strict=True)
        ]
