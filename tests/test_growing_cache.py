"""The in-place KV cache (``growing_cache.py``) and the judge's length groups
(``prefix_cache.length_groups``), on the tiny model."""

from __future__ import annotations

import copy
import itertools
import random

import pytest
import torch
from transformers import AutoModelForCausalLM

from spark_core.models.hf.backend import HFBackend
from spark_core.models.hf.growing_cache import SPARE, GrowingLayer, detached_copy
from spark_core.models.hf.prefix_cache import cache_arg, length_groups, new_cache, read_prefix
from spark_core.models.judge.prompt import JudgeItem
from spark_core.models.judge.scorers import HFJudge


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()


@torch.inference_mode()
def _decode(model, prompt: torch.Tensor, steps: int, grow: bool) -> torch.Tensor:
    """Greedy decoding of ``prompt`` (rows) with a crop, a repeat and a row selection of the
    cache on the way; every step's logits, concatenated."""
    arg = cache_arg(model)
    out = model(input_ids=prompt, use_cache=True, **(new_cache(model) if grow else {}))
    cache, logits = getattr(out, arg), [out.logits[:, -1]]
    ids = logits[-1].argmax(-1)[:, None]
    for step in range(steps):
        if step == 5:
            cache.crop(-2)  # written over in place
        if step == 9:
            cache.batch_repeat_interleave(2)  # adopted into a fresh buffer
            ids = ids.repeat_interleave(2, dim=0)
        if step == 14:
            rows = torch.tensor([3, 0, 1])
            cache.batch_select_indices(rows)
            ids = ids[rows]
        out = model(input_ids=ids, use_cache=True, **{arg: cache})
        cache = getattr(out, arg)
        logits.append(out.logits[:, -1])
        ids = logits[-1].argmax(-1)[:, None]
    assert all(isinstance(layer, GrowingLayer) for layer in cache.layers) == grow
    return torch.cat(logits)


def test_growing_cache_gives_the_concatenating_caches_logits_bit_for_bit(model):
    prompt = torch.randint(0, 1000, (2, 23), generator=torch.Generator().manual_seed(0))
    steps = SPARE + 10  # past the first buffer's spare room: one reallocation mid-decode
    assert torch.equal(_decode(model, prompt, steps, False), _decode(model, prompt, steps, True))


@torch.inference_mode()
def test_a_detached_copy_never_writes_into_the_originals_buffer(model):
    arg = cache_arg(model)
    prompt = torch.randint(0, 1000, (1, 12), generator=torch.Generator().manual_seed(1))
    a, b = torch.tensor([[11, 12, 13]]), torch.tensor([[21, 22, 23]])

    def branch_then_continue(copier) -> bool:
        """Extend a copy with ``a``, then the original with ``b``, then the copy once more:
        does the copy still see ``a``?"""
        original = getattr(model(input_ids=prompt, use_cache=True, **new_cache(model)), arg)
        branch = copier(original)
        model(input_ids=a, use_cache=True, **{arg: branch})
        model(input_ids=b, use_cache=True, **{arg: original})
        after = model(input_ids=torch.tensor([[5]]), use_cache=True, **{arg: branch}).logits
        expected = model(input_ids=torch.cat([prompt, a, torch.tensor([[5]])], 1)).logits
        return torch.allclose(after[0, -1], expected[0, -1], atol=1e-5)

    def shallow(cache):  # what a copy that kept the buffer would do
        out = copy.copy(cache)
        out.layers = [copy.copy(layer) for layer in cache.layers]
        return out

    assert branch_then_continue(detached_copy)
    assert not branch_then_continue(shallow)  # the hazard detached_copy exists for


def _cost(groups, lengths, overhead):
    return sum(len(g) * max(lengths[i] for i in g) + overhead for g in groups)


def test_length_groups_is_the_cheapest_partition():
    rng = random.Random(0)
    for _ in range(60):
        lengths = [rng.choice([3, 5, 20, 21, 40, 130]) + rng.randint(0, 4) for _ in range(7)]
        groups = length_groups(lengths, overhead=16)
        assert sorted(i for g in groups for i in g) == list(range(7))
        order = sorted(range(7), key=lambda i: lengths[i])
        best = min(  # every partition of the sorted rows into contiguous runs
            _cost([order[a:b] for a, b in zip((0, *cuts), (*cuts, 7), strict=True)], lengths, 16)
            for k in range(7)
            for cuts in itertools.combinations(range(1, 7), k)
        )
        assert _cost(groups, lengths, 16) == best
    assert length_groups([30] * 9) == [list(range(9))]  # nothing to gain: one pass
    assert length_groups([20, 22, 25, 21, 140, 24, 23, 26, 22])[-1] == [4]  # the outlier alone


def test_the_judge_scores_length_groups_as_it_scores_each_candidate_alone(tiny_model_dir):
    """Two states: the rubric both share is read once and continued by each state's prefix,
    whose candidates run in length groups."""
    backend = HFBackend(tiny_model_dir, device="cpu", batch_size=16)
    items = [
        JudgeItem(
            question,
            ("Oxygen", "Carbon dioxide", "Helium"),
            "",
            f"tool{i}",
            f"input {i}",
            "a long search result about photosynthesis " * 12 if i == 4 else f"{i}",
            thought="Photosynthesis takes in a gas.",
        )
        for question in ("Which gas do plants absorb?", "Which gas do we breathe out?")
        for i in range(9)
    ]
    judge = HFJudge(backend, "prefix")
    rows = [judge.prompt_ids(item) for item in items[:9]]
    shared = min(len(r) for r in rows) - 8
    assert len(length_groups([len(r) - shared for r in rows])) > 1  # groups are exercised
    grouped = [j.score for j in judge.score(items)]
    alone = [j.score for j in HFJudge(backend, "single").score(items)]
    assert grouped == pytest.approx(alone, abs=1e-4)


def test_a_prefix_continued_from_a_shorter_one_reads_as_the_whole(model):
    tokens = torch.randint(0, 1000, (40,), generator=torch.Generator().manual_seed(2)).tolist()
    base = read_prefix(model, tokens[:15], "cpu")
    whole, continued = read_prefix(model, tokens, "cpu"), read_prefix(model, tokens, "cpu", base)
    assert continued.length == whole.length == 40
    assert base.cache.layers[0].keys.shape[-2] == 15  # the base is left as it was
    for a, b in zip(whole.cache.layers, continued.cache.layers, strict=True):
        torch.testing.assert_close(a.keys, b.keys, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(a.values, b.values, rtol=1e-5, atol=1e-6)
    other = read_prefix(model, [7, *tokens[1:]], "cpu", base)  # not a continuation: read whole
    assert other.cache.layers[0].keys.shape[-2] == 40


def test_peek_reads_continuations_and_leaves_the_session_as_it_was(model):
    from spark_core.models.hf.kv_session import KVSession

    prompts = [[5, 6, 7, 8, 9, 10, 11], [5, 6, 7, 12]]

    def session() -> KVSession:
        s = KVSession(model, 0, "cpu")
        s.start(prompts)
        return s

    peeked, plain = session(), session()
    logits = peeked.peek([[21, 22], [23]])
    forked = plain.fork([0, 1])
    forked.feed([[21, 22], [23]])
    torch.testing.assert_close(logits[0], forked.step_logits[0])
    torch.testing.assert_close(logits[1, :1], forked.step_logits[1, :1])
    # afterwards the peeked session continues exactly as one that never peeked
    assert peeked.cache.layers[0].keys.shape == plain.cache.layers[0].keys.shape
    torch.testing.assert_close(peeked.feed([[30], [31]]), plain.feed([[30], [31]]))
