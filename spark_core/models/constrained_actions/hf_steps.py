"""A policy step with a constrained action on the local backend: thought (free text) ->
action (scored over the action names) -> action input (free text).

The whole step runs in one ``KVSession``: the prompt is read once, the thought is decoded,
``Action:`` is appended, every action name is scored on a fork of that cache (``scoring``),
the chosen name and ``Action Input:`` are appended and the input is decoded. Compared with
writing the step as free text, the only extra work is one small forward pass over the names'
few tokens — the prompt is never read twice.
"""

from __future__ import annotations

import random
from typing import Any

import torch

from spark_core.artifacts import canonical_hash
from spark_core.models.constrained_actions.scoring import (
    name_suffixes,
    name_tokens,
    score_session,
)
from spark_core.models.hf.kv_session import KVSession
from spark_core.models.requests import OnDone, PolicyStep, StepRequest
from spark_core.protocol import INPUT_STOP, THOUGHT_STOP, cut_at


class _Decoder:
    def __init__(self, backend: Any, session: KVSession, request: StepRequest):
        self.backend, self.session = backend, session
        self.tok = backend.tokenizer
        self.eos = {self.tok.eos_token_id, self.tok.pad_token_id}
        self.sampling = request.chat(1)
        self.rng = torch.Generator().manual_seed(request.seed) if request.temperature > 0 else None

    def decode(
        self, max_tokens: int, stops: tuple[str, ...], continue_after: bool = True
    ) -> list[list[int]]:
        """Decode every row until a stop string, EOS or ``max_tokens``; every generated token
        (stop strings included) is fed, so the cache holds exactly the text written — except,
        when nothing follows (``continue_after=False``), the last ones, which nobody reads."""
        rows = self.session.rows
        generated: list[list[int]] = [[] for _ in range(rows)]
        done = [False] * rows
        for step in range(max_tokens):
            live = [i for i in range(rows) if not done[i]]
            if not live:
                break
            picks = self.backend.next_tokens(self.session.last[live], self.sampling, self.rng)
            feed: list[list[int]] = [[] for _ in range(rows)]
            for i, token in zip(live, picks.tolist(), strict=True):
                if token in self.eos:
                    done[i] = True
                    continue
                generated[i].append(token)
                feed[i] = [token]
                text = self.tok.decode(generated[i][-16:], skip_special_tokens=True)
                done[i] = any(s in text for s in stops)
            if not continue_after and (all(done) or step == max_tokens - 1):
                break
            self.session.feed(feed)
        return generated

    def settle(self, row: int, generated: list[int], target: str) -> list[int]:
        """Make the row's visible text exactly ``target``: keep the longest run of generated
        tokens that spells a prefix of it, hide the rest, and return the tokens still to feed."""
        keep = len(generated)
        while keep and not target.startswith(self.tok.decode(generated[:keep])):
            keep -= 1
        rest = target[len(self.tok.decode(generated[:keep])) :]
        if not rest and keep < len(generated):  # the row's last logits must be refreshed
            keep -= 1
            rest = target[len(self.tok.decode(generated[:keep])) :]
        self.session.retract(row, len(generated) - keep)
        return self.tok(rest, add_special_tokens=False).input_ids if rest else []


@torch.inference_mode()
def _hf_batch(backend: Any, batch: list[StepRequest]) -> list[PolicyStep]:
    first, tok = batch[0], backend.tokenizer
    names = list(first.names)
    suffixes = name_suffixes(tok, names)
    prompts = [
        tok(backend.prompt_text(r.chat(1, "Thought:")), add_special_tokens=False).input_ids
        for r in batch
    ]
    session = KVSession(backend.model, tok.pad_token_id, backend.device)
    session.start(prompts)
    decoder = _Decoder(backend, session, first)
    thought_ids = decoder.decode(first.thought_tokens, THOUGHT_STOP)
    thoughts, bridges = [], []
    for row, ids in enumerate(thought_ids):
        thought, _ = cut_at(tok.decode(ids, skip_special_tokens=True), THOUGHT_STOP)
        thoughts.append(thought)
        bridges.append(decoder.settle(row, ids, f"{thought}\nAction:"))
    session.feed(bridges)
    dists = score_session(session, suffixes, names, range(len(batch)))
    drawn = [
        dist.choose(r.temperature, random.Random(f"action:{r.seed}:{canonical_hash(r.to_dict())}"))
        for r, dist in zip(batch, dists, strict=True)
    ]
    label = tok("\nAction Input:", add_special_tokens=False).input_ids
    own = name_tokens(tok, names)
    session.feed([own[names.index(c)] + label for c in drawn])
    input_ids = decoder.decode(first.input_tokens, INPUT_STOP, continue_after=False)
    steps = []
    for row, r in enumerate(batch):
        text, stopped = cut_at(tok.decode(input_ids[row], skip_special_tokens=True), INPUT_STOP)
        length = len(input_ids[row]) >= r.input_tokens and not stopped
        steps.append(
            PolicyStep(
                thoughts[row].strip(),
                drawn[row],
                text.strip(),
                dists[row].to_dict(),
                prompt_tokens=len(prompts[row]),
                completion_tokens=len(thought_ids[row]) + len(input_ids[row]),
                finish_reason="length" if length else "stop",
                extra={"name_mass": round(dists[row].mass, 6)},
            )
        )
    return steps


def hf_policy_steps(
    backend: Any, requests: list[StepRequest], on_done: OnDone = None
) -> list[PolicyStep]:
    """Constrained steps on the local backend, batched by sampling parameters."""
    results: list[PolicyStep | None] = [None] * len(requests)
    groups: dict[tuple, list[int]] = {}
    for i, r in enumerate(requests):
        key = (r.names, r.thought_tokens, r.input_tokens, r.temperature, r.top_p, r.seed)
        groups.setdefault(key, []).append(i)
    with backend.computing():
        for indices in groups.values():
            for start in range(0, len(indices), backend.batch_size):
                chunk = indices[start : start + backend.batch_size]
                for i, step in zip(
                    chunk, _hf_batch(backend, [requests[i] for i in chunk]), strict=True
                ):
                    results[i] = step
                    if on_done is not None:
                        on_done(i, step)
    return [r for r in results if r is not None]
