"""One policy step with a constrained action: thought (free text) -> action (scored over the
action names) -> action input (free text).

``hf``: the whole step runs in one ``KVSession``: the prompt is read once, the thought is
decoded, ``Action:`` is appended, every action name is scored on a fork of that cache
(``action_scoring``), the chosen name and ``Action Input:`` are appended and the input is
decoded. Compared with writing the step as free text, the only extra work is one small forward
pass over the names' few tokens — the prompt is never read twice.

``openai``: see ``openai_actions`` (structured output where the server has it).
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from spark_core.artifacts import canonical_hash
from spark_core.models.action_scoring import name_suffixes, name_tokens, score_session
from spark_core.models.kv_session import KVSession
from spark_core.models.requests import ChatRequest, Gate, Message, Metered, OnDone

THOUGHT_STOP = ("\nAction", "\nObservation", "\nThought")
INPUT_STOP = ("\nObservation", "\nThought", "\nAction")


@dataclass(frozen=True)
class StepRequest:
    """What a constrained step needs: the state, the action names and the token budgets."""

    messages: tuple[Message, ...]
    names: tuple[str, ...]
    thought_tokens: int = 48
    input_tokens: int = 32
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["messages"] = [list(m) for m in self.messages]
        data["names"] = list(self.names)
        return data

    def chat(self, max_new_tokens: int, prefill: str = "") -> ChatRequest:
        return ChatRequest(
            self.messages, max_new_tokens, self.temperature, self.top_p, self.seed, (), prefill
        )


STEP_CALLS = 3
"""Requests one constrained step sends to an OpenAI-compatible server: the thought, the action
(structured output or free text), the input — what a cost limit reserves for."""


@dataclass
class PolicyStep(Metered):
    thought: str
    action: str  # one of the names, or "invalid" (free-text fallback that did not parse)
    action_input: str
    distribution: dict[str, float] = field(default_factory=dict)  # {} where not available


def cut_at(text: str, stops: tuple[str, ...]) -> tuple[str, bool]:
    """The text before the earliest stop string, and whether one occurred."""
    ends = [text.index(s) for s in stops if s in text]
    return (text[: min(ends)], True) if ends else (text, False)


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
    chosen = [
        dist.choose(r.temperature, random.Random(f"action:{r.seed}:{canonical_hash(r.to_dict())}"))
        for r, dist in zip(batch, dists, strict=True)
    ]
    label = tok("\nAction Input:", add_special_tokens=False).input_ids
    own = name_tokens(tok, names)
    session.feed([own[names.index(c)] + label for c in chosen])
    input_ids = decoder.decode(first.input_tokens, INPUT_STOP, continue_after=False)
    steps = []
    for row, r in enumerate(batch):
        text, stopped = cut_at(tok.decode(input_ids[row], skip_special_tokens=True), INPUT_STOP)
        length = len(input_ids[row]) >= r.input_tokens and not stopped
        steps.append(
            PolicyStep(
                thoughts[row].strip(),
                chosen[row],
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


def policy_steps(
    backend: Any, requests: list[StepRequest], on_done: OnDone = None, gate: Gate = None
) -> list[PolicyStep]:
    """Constrained steps on either backend; ``gate`` (a cost limit) applies to paid calls,
    so a local batch ignores it."""
    if backend.backend == "hf":
        return hf_policy_steps(backend, requests, on_done)
    from spark_core.models.openai_actions import openai_policy_steps

    return openai_policy_steps(backend, requests, on_done, gate)
