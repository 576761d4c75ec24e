"""Constrained action scoring on the tiny random model (real SmolLM2 tokenizer)."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest
import torch

from spark_core.config import ACTIONS
from spark_core.models.constrained_actions.scoring import (
    ActionDistribution,
    action_names,
    name_suffixes,
    score_actions,
    state_ids,
)
from spark_core.models.hf.backend import HFBackend
from spark_core.models.requests import ChatRequest
from tests.helpers import random_adapter

NAMES = action_names(list(ACTIONS))


@pytest.fixture(scope="module")
def backend(tiny_model_dir):
    return HFBackend(tiny_model_dir, device="cpu", batch_size=2)


def _states(backend) -> list[str]:
    questions = ["What is 2+2?", "A train covers 120 km in 1.5 hours; its speed?", "Hi"]
    thoughts = ["I add.", "Speed is distance over time, so I divide 120 by 1.5.", "Hm"]
    return [
        backend.prompt_text(ChatRequest.user(q, prefill=f"Thought: {t}\nAction: "))
        for q, t in zip(questions, thoughts, strict=True)
    ]


def _full_logprob(backend, state: str, name: str, names: list[str]) -> float:
    """log P(name's scored text | state) from one plain forward pass over the whole text."""
    tok = backend.tokenizer
    scored = tok.decode(name_suffixes(tok, names)[names.index(name)])
    base = tok(state.rstrip(" "), add_special_tokens=False).input_ids
    full = tok(state.rstrip(" ") + scored, add_special_tokens=False).input_ids
    assert full[: len(base)] == base  # the boundary: state tokens + the name's own tokens
    with torch.inference_mode():
        logits = backend.model(input_ids=torch.tensor([full])).logits[0].float()
    logp = torch.log_softmax(logits, dim=-1)
    return sum(float(logp[i - 1, full[i]]) for i in range(len(base), len(full)))


def test_distribution_is_exact_and_normalised(backend):
    states = _states(backend)
    dists = score_actions(backend, states, NAMES)
    assert len(dists) == len(states)
    for state, dist in zip(states, dists, strict=True):
        assert dist.names == tuple(NAMES) and "answer" in dist.names
        assert math.isclose(sum(dist.probs), 1.0, abs_tol=1e-9)
        assert dist.argmax == NAMES[max(range(len(NAMES)), key=lambda i: dist.probs[i])]
        assert 0 < dist.mass <= 1
        expected = [_full_logprob(backend, state, n, NAMES) for n in NAMES]
        assert dist.logprobs == pytest.approx(expected, abs=1e-4)
        assert 0 <= dist.normalized_entropy <= 1
        assert dist.entropy_bits == pytest.approx(
            -sum(p * math.log2(p) for p in dist.probs), abs=1e-9
        )


def test_boundary_space_and_batching_do_not_change_scores(backend):
    states = _states(backend)
    spaced = score_actions(backend, states, NAMES)  # "...Action: " (batch_size 2: two chunks)
    bare = [score_actions(backend, [s.rstrip()], NAMES)[0] for s in states]  # "...Action:"
    for a, b in zip(spaced, bare, strict=True):
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-4)
    tok = backend.tokenizer
    for name, suffix in zip(NAMES, name_suffixes(tok, NAMES), strict=True):
        assert tok.decode(suffix) == f" {name}"  # the space is the name's, scored for all
        text = states[0].rstrip() + f" {name}"
        assert tok(text, add_special_tokens=False).input_ids == state_ids(tok, states[0]) + suffix
    with pytest.raises(ValueError, match="must end with"):
        score_actions(backend, ["no action label here"], NAMES)


def test_a_name_that_prefixes_another_is_not_favoured(backend):
    state = _states(backend)[1]
    names = ["python", "python_exec", "stat", "statistics"]
    tok = backend.tokenizer
    scored = [tok.decode(s) for s in name_suffixes(tok, names)]
    # " python" is the first token of " python_exec": it is scored as the whole line
    assert scored == [" python\n", " python_exec", " stat", " statistics"]
    dist = score_actions(backend, [state], names)[0]
    expected = [_full_logprob(backend, state, n, names) for n in names]
    assert dist.logprobs == pytest.approx(expected, abs=1e-4)


def test_the_prefix_is_read_once(backend):
    """One forward pass over each chunk of states, then one small pass per name of several
    tokens, on the session itself (a name's first token is read from the state's own pass;
    no row's cache is copied)."""
    states = _states(backend)
    seen: list[int] = []
    hook = backend.model.register_forward_pre_hook(
        lambda _m, _a, kw: seen.append(int(kw["input_ids"].shape[1])), with_kwargs=True
    )
    try:
        score_actions(backend, states, NAMES)
    finally:
        hook.remove()
    longer = [len(s) - 1 for s in name_suffixes(backend.tokenizer, NAMES) if len(s) > 1]
    assert longer  # the names exercise the continued passes
    # batch_size 2: two chunks of states, each read once, then one pass per longer name
    assert len(seen) == 2 * (1 + len(longer))
    assert sorted(seen)[: 2 * len(longer)] == sorted(longer * 2)


def test_adapter_argument_switches_and_restores(tiny_model_dir, tmp_path):
    random_adapter(tiny_model_dir, 5).save_pretrained(tmp_path / "a")
    backend = HFBackend(tiny_model_dir, device="cpu")
    state = _states(backend)[0]
    base = score_actions(backend, [state], NAMES)[0]
    backend.add_adapter("a", tmp_path / "a")
    with_a = score_actions(backend, [state], NAMES, adapter="a")[0]
    assert backend.adapter is None  # restored
    assert score_actions(backend, [state], NAMES)[0].logprobs == pytest.approx(base.logprobs)
    backend.use_adapter("a")
    assert score_actions(backend, [state], NAMES)[0].logprobs == pytest.approx(with_a.logprobs)
    assert score_actions(backend, [state], NAMES, adapter=None)[0].logprobs == pytest.approx(
        base.logprobs
    )
    assert backend.adapter == "a"
    merged = backend.merged("a", tmp_path / "a")
    assert score_actions(merged, [state], NAMES)[0].logprobs == pytest.approx(
        with_a.logprobs, abs=1e-4
    )
    assert with_a.logprobs != pytest.approx(base.logprobs, abs=1e-3)


def test_choice_is_greedy_at_zero_and_seeded_otherwise():
    dist = ActionDistribution(("a", "b", "c"), tuple(math.log(p) for p in (0.2, 0.5, 0.3)))
    assert dist.probs == pytest.approx((0.2, 0.5, 0.3))
    assert dist.choose(0.0, random.Random(1)) == "b"
    draws = [dist.choose(1.0, random.Random(7)) for _ in range(3)]
    assert len(set(draws)) == 1  # same seed, same draw
    rng = random.Random(0)
    counts = Counter(dist.choose(1.0, rng) for _ in range(20_000))
    assert {k: v / 20_000 for k, v in counts.items()} == pytest.approx(
        {"a": 0.2, "b": 0.5, "c": 0.3}, abs=0.015
    )
    hot = Counter(dist.choose(100.0, rng) for _ in range(20_000))  # near uniform
    assert min(hot.values()) / 20_000 > 0.3
    assert dist.entropy_bits == pytest.approx(
        -(0.2 * math.log2(0.2) + 0.5 * math.log2(0.5) + 0.3 * math.log2(0.3))
    )
