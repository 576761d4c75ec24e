"""Attention that reads a shared prefix in place (``shared_prefix.py``), on the tiny model:
every row's logits are those of the row run alone, whatever the prefixes, levels, hidden
positions and dropped rows."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from transformers import AutoModelForCausalLM

from spark_core.models.hf import shared_prefix
from spark_core.models.hf.backend import HFBackend
from spark_core.models.hf.kv_session import KVSession
from spark_core.models.hf.prefix_cache import cache_arg, growing_cache, read_prefix
from spark_core.models.hf.shared_prefix import SharedPrefix, _attend
from spark_core.models.judge.prompt import JudgeItem
from spark_core.models.judge.scorers import HFJudge

TOL = 1e-4


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()


def _tokens(n: int, seed: int) -> list[int]:
    return torch.randint(5, 1000, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


@torch.inference_mode()
def _alone(model, tokens: list[int]) -> torch.Tensor:
    return model(input_ids=torch.tensor([tokens])).logits[0]


@torch.inference_mode()
def _run(model, levels, own: list[list[int]], starts: list[int]) -> torch.Tensor:
    """The rows' own tokens (right-padded) on ``levels``, their positions from ``starts``."""
    width = max(len(o) for o in own)
    ids = torch.tensor([o + [0] * (width - len(o)) for o in own])
    mask = torch.tensor([[1] * len(o) + [0] * (width - len(o)) for o in own])
    positions = torch.tensor(starts)[:, None] + torch.arange(width)[None, :]
    out = shared_prefix.forward(
        model,
        levels,
        input_ids=ids,
        attention_mask=mask,
        position_ids=positions,
        use_cache=True,
        **{cache_arg(model): growing_cache(model)},
    )
    return out.logits


def test_rows_on_one_prefix_read_as_each_row_alone(model):
    prefix = _tokens(40, 0)
    own = [_tokens(n, 10 + n) for n in (3, 9, 6)]
    base = read_prefix(model, prefix, "cpu")
    shared = SharedPrefix.whole(base.cache, 3)
    logits = _run(model, shared, own, [40] * 3)
    for row, tokens in enumerate(own):
        alone = _alone(model, prefix + tokens)[40:]
        assert torch.allclose(logits[row, : len(tokens)], alone, atol=TOL)
    assert model.config._attn_implementation == "sdpa"  # switched for that pass alone


def test_two_levels_with_hidden_positions_read_as_the_visible_tokens_alone(model):
    """A rubric, then states of different lengths held right-padded in one session (a row's
    padding and a rolled-back tail hidden), then each row's own tokens."""
    rubric = _tokens(12, 1)
    states = [_tokens(n, 20 + n) for n in (7, 15)]
    base = read_prefix(model, rubric, "cpu")
    on_rubric = SharedPrefix.whole(base.cache, 2)
    session = KVSession.continuing(model, 0, "cpu", on_rubric, [12, 12])
    session.extend(states)
    owner = [0, 1, 1, 0]
    visible = session.mask[owner].bool()
    visible[2, 10:] = False  # this row continues only the first 10 tokens of its state
    lengths = [7, 15, 10, 7]
    levels = (
        SharedPrefix.whole(base.cache, 4),
        SharedPrefix.of_cache(session.cache, owner, visible),
    )
    own = [_tokens(n, 40 + n) for n in (4, 2, 5, 1)]
    logits = _run(model, levels, own, [12 + n for n in lengths])
    for row, (state, n, tokens) in enumerate(zip(owner, lengths, own, strict=True)):
        seen = rubric + states[state][:n] + tokens
        alone = _alone(model, seen)[len(seen) - len(tokens) :]
        assert torch.allclose(logits[row, : len(tokens)], alone, atol=TOL)


def test_a_row_that_sees_none_of_a_level_reads_as_without_it(model):
    rubric, state = _tokens(10, 2), _tokens(6, 3)
    base = read_prefix(model, rubric, "cpu")
    whole = read_prefix(model, rubric + state, "cpu")
    hidden = torch.zeros(1, 16, dtype=torch.bool)
    levels = (
        SharedPrefix.whole(base.cache, 1),
        SharedPrefix.of_cache(whole.cache, [0], hidden),
    )
    own = [_tokens(5, 4)]
    logits = _run(model, levels, own, [10])
    assert torch.allclose(logits[0], _alone(model, rubric + own[0])[10:], atol=TOL)


@torch.inference_mode()
def test_decoding_after_dropping_rows_continues_the_kept_rows_alone(model):
    prefix = _tokens(30, 5)
    base = read_prefix(model, prefix, "cpu")
    shared = SharedPrefix.whole(base.cache, 3)
    session = KVSession.continuing(model, 0, "cpu", shared, [30] * 3)
    own = [_tokens(n, 50 + n) for n in (2, 4, 3)]
    session.feed(own)
    session.keep_rows([2, 0])  # the middle row finished
    step = [[7], [8]]
    last = session.feed(step)
    for row, kept in enumerate([2, 0]):
        alone = _alone(model, prefix + own[kept] + step[row])[-1]
        assert torch.allclose(last[row], alone, atol=TOL)


@torch.inference_mode()
def test_a_row_rolls_back_its_own_tokens_but_not_into_the_shared_prefix(model):
    prefix = _tokens(20, 7)
    base = read_prefix(model, prefix, "cpu")
    shared = SharedPrefix.whole(base.cache, 1)
    session = KVSession.continuing(model, 0, "cpu", shared, [20])
    own = _tokens(3, 8)
    session.feed([own])
    session.retract(0, 1)
    last = session.feed([[9]])
    assert torch.allclose(last[0], _alone(model, prefix + own[:2] + [9])[-1], atol=TOL)
    with pytest.raises(ValueError, match="shared"):
        session.retract(0, 4)


def test_the_fused_cpu_kernel_and_the_plain_products_agree():
    """CPU takes the fused kernel; other devices the plain products: the same numbers, and a
    query that sees nothing gets no weight in the merge (log-sum-exp near ``finfo.min``)."""
    g = torch.Generator().manual_seed(6)
    q, k, v = (torch.randn(2, 3, n, 8, generator=g) for n in (5, 7, 7))
    mask = torch.zeros(2, 1, 5, 7)
    mask[0, :, :, 4:] = torch.finfo(torch.float32).min
    mask[1, :, 2] = torch.finfo(torch.float32).min  # one query sees no key
    fused, fused_lse = _attend(q, k, v, mask, 0.35)
    plain, plain_lse = _attend(q, k, v, mask, 0.35, fused=False)
    assert torch.allclose(fused[0], plain[0], atol=1e-5)
    assert torch.allclose(fused_lse[0], plain_lse[0], atol=1e-5)
    seen = [0, 1, 3, 4]
    assert torch.allclose(fused[1][:, seen], plain[1][:, seen], atol=1e-5)
    assert bool((fused_lse[1][:, 2] < -1e37).all()) and bool((plain_lse[1][:, 2] < -1e37).all())
    scores = q[0] @ k[0].transpose(-1, -2) * 0.35 + mask[0]
    assert torch.allclose(plain[0], torch.softmax(scores, -1) @ v[0], atol=1e-5)


def test_models_whose_attention_differs_keep_the_repeated_cache(model):
    assert shared_prefix.supported(model)

    def with_config(**config):
        return SimpleNamespace(config=SimpleNamespace(_attn_implementation="sdpa", **config))

    assert shared_prefix.supported(with_config(layer_types=["full_attention"] * 2))
    assert not shared_prefix.supported(
        with_config(layer_types=["full_attention", "sliding_attention"])
    )
    assert not shared_prefix.supported(with_config(sliding_window=4096))
    assert not shared_prefix.supported(with_config(attn_logit_softcapping=50.0))
    assert not shared_prefix.supported(with_config(v_head_dim=128))
    flash = with_config()
    flash.config._attn_implementation = "flash_attention_2"
    assert not shared_prefix.supported(flash)


def test_the_judge_scores_states_in_chunks_as_it_scores_each_candidate_alone(tiny_model_dir):
    """Five states of 1 to 9 candidates (a state of one has no prompt part of its own), four
    states a chunk, groups of at most four rows: the scores of one candidate at a time."""
    backend = HFBackend(tiny_model_dir, device="cpu", batch_size=4)
    items = [
        JudgeItem(
            f"Which gas is number {state}?",
            ("Oxygen", "Carbon dioxide", "Helium"),
            "" if state % 2 else "Thought: look it up\nAction: cot\nObservation: done",
            f"tool{i}",
            f"input {i}",
            "a long search result about gases " * 9 if i == 2 else f"{i}",
            thought=f"Think about gas {state}.",
        )
        for state, candidates in enumerate((1, 3, 9, 2, 9))
        for i in range(candidates)
    ]
    on_states = [j.score for j in HFJudge(backend, "prefix").score(items)]
    alone = [j.score for j in HFJudge(backend, "single").score(items)]
    assert on_states == pytest.approx(alone, abs=1e-4)
