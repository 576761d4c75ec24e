"""Constrained action choice: the exact distribution P(action | state) over the action names.

A policy step's action is one of the configured action names or ``answer``. Instead of letting
the model write free text and parsing it, every name is scored as a continuation of the state
(the prompt up to and including ``Action:``): the state is read in ONE forward pass, its KV
cache is forked for the candidates, and each name's token log-probs are summed. Normalised over
the names, that is the policy's action distribution — exact, never a parse artifact.

Tokenisation at the boundary: what is scored for a name is its tokens in the text
``"Action: " + name``. With byte-level BPE (SmolLM2, GPT-2, Llama-3...) the space belongs to
the name's first token (``':'``, ``' calculator'``), so a state given as ``"...Action: "`` has
its trailing spaces removed first and every name is scored with its own leading space, exactly
as the model would write it. A name whose tokens begin another name's (``python`` /
``python_exec``) is scored with its closing newline, so the scored sequences are prefix-free
and no name is favoured by being a prefix. A name's first token costs nothing beyond the
state's own forward pass; only names of several tokens need the (small, batched) forks.
``name_suffixes`` checks that the split holds for the tokenizer at hand.

Public API (hf)::

    action_names(actions) -> list[str]
        The configured actions plus "answer", in order, without repeats.
    score_actions(backend, prefixes, names, adapter=ACTIVE) -> list[ActionDistribution]
        backend: HFBackend; prefixes: full prompt texts (chat template applied, assistant turn
        started, e.g. "...<|im_start|>assistant\\nThought: ...\\nAction: "), each ending with
        "Action:" plus optional spaces; names: the candidates (see action_names). adapter:
        ACTIVE (default) keeps the backend's active adapter; None scores the base model; a
        name switches to that loaded adapter for the call and back afterwards. One forward
        pass per prefix (batched by backend.batch_size) plus one small pass for the names
        of several tokens.
    ActionDistribution(names, logprobs)
        .probs (normalised, sums to 1), .prob(name), .argmax, .mass (total probability of
        the names before normalising), .entropy_bits, .normalized_entropy (/ log2 |names|),
        .choose(temperature, rng): argmax at temperature 0, else a draw from p^(1/T)
        normalised, using ``rng`` (a random.Random, so seeded draws are reproducible).

For callers that already hold the state in a ``KVSession`` (evaluation writes the thought and
the input in the same session): ``name_tokens(tokenizer, names)`` (a name's own tokens),
``name_suffixes(tokenizer, names)`` (what is scored) and ``score_session(session, suffixes,
names, rows)``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import torch

from spark_core.models.hf.backend import compute_lock
from spark_core.models.hf.kv_session import KVSession
from spark_core.protocol import ANSWER

ACTIVE: Any = object()
"""Sentinel for ``adapter``: score with whatever adapter the backend has active."""
ANCHOR = "Action:"
NAME_END = "\n"


def action_names(actions: Sequence[str]) -> list[str]:
    """The names a policy step chooses among: the configured actions plus ``answer``."""
    return list(dict.fromkeys([*actions, ANSWER]))


@dataclass(frozen=True)
class ActionDistribution:
    names: tuple[str, ...]
    logprobs: tuple[float, ...]  # summed token log-probs of the name after the state

    @cached_property
    def probs(self) -> tuple[float, ...]:
        top = max(self.logprobs)
        weights = [math.exp(lp - top) for lp in self.logprobs]
        total = sum(weights)
        return tuple(w / total for w in weights)

    def prob(self, name: str) -> float:
        return self.probs[self.names.index(name)]

    @property
    def argmax(self) -> str:
        return self.names[max(range(len(self.names)), key=lambda i: self.logprobs[i])]

    @property
    def mass(self) -> float:
        """How much of the model's probability the valid names hold, before normalising."""
        return sum(math.exp(lp) for lp in self.logprobs)

    @property
    def entropy_bits(self) -> float:
        return max(0.0, -sum(p * math.log2(p) for p in self.probs if p > 0))

    @property
    def normalized_entropy(self) -> float:
        n = len(self.names)
        return self.entropy_bits / math.log2(n) if n > 1 else 0.0

    def choose(self, temperature: float, rng: random.Random) -> str:
        """Greedy at temperature 0; otherwise sample from the distribution tempered by T."""
        if temperature <= 0:
            return self.argmax
        return rng.choices(self.names, weights=tempered(self.probs, temperature), k=1)[0]

    def to_dict(self) -> dict[str, float]:
        return dict(zip(self.names, self.probs, strict=True))


def tempered(probs: Sequence[float], temperature: float) -> list[float]:
    """p^(1/T), renormalised: the distribution an action sampled at temperature T is drawn
    from (T <= 0 or 1: ``probs`` as they are). What the report must score for a sampled
    policy: at T = 1.5, (.7, .1, .15, .05) holds 1.32 bits but is sampled at 1.67."""
    if temperature <= 0 or temperature == 1 or not probs:
        return list(probs)
    logs = [math.log(p) / temperature if p > 0 else -math.inf for p in probs]
    top = max(logs)
    weights = [math.exp(v - top) for v in logs]
    total = sum(weights)
    return [w / total for w in weights]


def name_tokens(tokenizer: Any, names: Sequence[str]) -> list[list[int]]:
    """Each name's tokens as the model writes them after ``Action:`` (with the leading space).
    Raises if the tokenizer merges across the ``:`` boundary, where scoring names separately
    from the state would not be faithful."""
    anchor = tokenizer(ANCHOR, add_special_tokens=False).input_ids
    out = []
    for name in names:
        ids = tokenizer(f"{ANCHOR} {name}", add_special_tokens=False).input_ids
        if ids[: len(anchor)] != anchor or len(ids) == len(anchor):
            raise ValueError(f"the tokenizer merges {ANCHOR!r} with {name!r}: cannot score it")
        out.append(ids[len(anchor) :])
    return out


def name_suffixes(tokenizer: Any, names: Sequence[str]) -> list[list[int]]:
    """The tokens scored for each name: its own, plus the closing newline's for a name whose
    tokens begin another name's (``python`` / ``python_exec``), so the scored sequences are
    prefix-free and their probabilities are those of distinct, complete choices."""
    plain = name_tokens(tokenizer, names)
    anchor = len(tokenizer(ANCHOR, add_special_tokens=False).input_ids)
    out = []
    for name, ids in zip(names, plain, strict=True):
        if any(o != ids and o[: len(ids)] == ids for o in plain):
            ended = tokenizer(f"{ANCHOR} {name}{NAME_END}", add_special_tokens=False).input_ids
            if ended[anchor : anchor + len(ids)] != ids:
                raise ValueError(f"the tokenizer merges {name!r} with a newline")
            ids = ended[anchor:]
        out.append(ids)
    return out


def score_session(
    session: KVSession, suffixes: list[list[int]], names: Sequence[str], rows: Sequence[int]
) -> list[ActionDistribution]:
    """Score every name after each given row's state (its last visible token is ``:``). A
    name's first token is read from the state's own next-token logits; a name of more than one
    token continues on the session itself, every row in one small forward pass per name,
    cropped off again (``KVSession.peek``): no row's cache is copied (forks of 32 rows of a
    ~450-token state were ~0.7 GB, evaluation's peak)."""
    first = torch.log_softmax(session.last[list(rows)], dim=-1)
    totals = [[float(first[r, s[0]]) for s in suffixes] for r in range(len(rows))]
    index = torch.tensor(list(rows))
    for j, suffix in enumerate(suffixes):
        if len(suffix) == 1:
            continue
        feed: list[list[int]] = [[] for _ in range(session.rows)]
        for r in rows:
            feed[r] = suffix[:-1]
        rest = suffix[1:]
        logits = session.peek(feed)[index.to(session.step_logits.device), : len(rest)]
        steps = torch.log_softmax(logits.float(), dim=-1)  # [rows, len(rest), vocab]
        rest_ids = torch.tensor(rest, device=steps.device)  # logits live on the model's device
        scored = steps.gather(2, rest_ids.expand(len(rows), -1)[..., None]).sum(dim=(1, 2))
        for k, value in enumerate(scored.tolist()):
            totals[k][j] += value
    return [ActionDistribution(tuple(names), tuple(t)) for t in totals]


def state_ids(tokenizer: Any, prefix: str) -> list[int]:
    """A state's tokens: the prompt up to ``Action:`` with trailing spaces removed."""
    base = prefix.rstrip(" \t")
    if not base.endswith(":"):
        raise ValueError(f"a state must end with {ANCHOR!r} (got ...{prefix[-30:]!r})")
    return tokenizer(base, add_special_tokens=False).input_ids


def score_actions(
    backend: Any, prefixes: Sequence[str], names: Sequence[str], adapter: Any = ACTIVE
) -> list[ActionDistribution]:
    """P(name | state) for every prefix (see the module docstring)."""
    tokenizer = backend.tokenizer
    suffixes = name_suffixes(tokenizer, names)
    rows = [state_ids(tokenizer, p) for p in prefixes]
    # batches of similar lengths: less padding (the states are read in length order, the
    # distributions come back in the prefixes' order)
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    out: list[ActionDistribution | None] = [None] * len(rows)
    with compute_lock(backend.device):  # re-entrant: held across the switch and the passes
        previous = backend.adapter
        if adapter is not ACTIVE:
            backend.use_adapter(adapter)
        try:
            with backend.computing():
                for start in range(0, len(rows), backend.batch_size):
                    chunk = order[start : start + backend.batch_size]
                    session = KVSession(backend.model, tokenizer.pad_token_id, backend.device)
                    session.start([rows[i] for i in chunk])
                    scored = score_session(session, suffixes, names, range(len(chunk)))
                    for i, dist in zip(chunk, scored, strict=True):
                        out[i] = dist
        finally:
            if adapter is not ACTIVE:
                backend.use_adapter(previous)
    return [d for d in out if d is not None]
