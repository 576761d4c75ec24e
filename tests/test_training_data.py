"""Training data: one truncation rule for SFT and PPO, behaviour log-probs as PPO's pi_old,
the SFT data choice, token budgets and what the judge sees."""

from __future__ import annotations

import pytest
import torch

from spark_core.protocol import (
    render_step,
)
from spark_core.training.data import fit, greedy_rows, ppo_examples, sft_records
from tests.helpers import OPTIONS, QUESTION, long_row, make_policy, ppo_args, training_system

SYSTEM = training_system()  # the real system prompt (calculator, chemistry, cot)


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from spark_core.models.hf.backend import load_tokenizer

    return load_tokenizer(tiny_model_dir)


def test_one_truncation_rule_keeps_system_question_and_action_line(tokenizer):
    rows = [long_row(0), long_row(2), long_row(5)]
    sizes = [fit(tokenizer, r["system"], r["prompt"], r["completion"], 10**6) for r in rows]
    full = [len(f.prompt_ids) + len(f.completion_ids) for f in sizes]
    assert full[0] < full[1] < full[2]
    budget = full[1] + 20  # the 5-step row must lose steps, the others fit as they are
    examples, ppo_report = ppo_examples(rows, tokenizer, budget)
    records, sft_report = sft_records(rows, tokenizer, budget)
    assert (ppo_report.truncated_rows, ppo_report.dropped_rows) == (1, 0)
    assert (sft_report.truncated_rows, sft_report.dropped_rows) == (1, 0)
    for example, record, row in zip(examples, records, rows, strict=True):
        text = tokenizer.decode(example["input_ids"])
        trained = tokenizer.decode(
            [t for t, m in zip(example["input_ids"], example["completion_mask"], strict=True) if m]
        )
        assert len(example["input_ids"]) <= budget
        assert "Action: chemistry" in trained and "Action Input: 36 / 18.015" in trained
        assert text.count(SYSTEM.splitlines()[0]) == 1 and QUESTION in text
        assert record["completion"][0]["content"] == row["completion"]
        assert record["prompt"][1]["content"] in text  # SFT sees the same fitted state
    fitted_prompt = records[2]["prompt"][1]["content"]
    assert "earlier steps omitted)" in fitted_prompt and "step 5:" in fitted_prompt
    assert "step 1:" not in fitted_prompt  # the oldest step went first
    # a row that cannot fit even without its steps is left out and counted, never cut
    too_long = {**long_row(0), "completion": render_step("x " * 400, "cot", "y")}
    kept, report = ppo_examples([too_long, rows[0]], tokenizer, full[0] + 10)
    assert (report.dropped_rows, report.truncated_rows, len(kept)) == (1, 0, 1)
    with pytest.raises(ValueError, match="raise max_seq_len"):
        ppo_examples(rows, tokenizer, 40)


def test_greedy_sft_data_is_the_judges_top_candidate():
    pool = [
        {"question_id": 1, "step": 1, "action": "cot", "judge_score": 7.0},
        {"question_id": 1, "step": 1, "action": "chemistry", "judge_score": 9.0},
        {"question_id": 1, "step": 1, "action": "calculator", "judge_score": 9.0},
        {"question_id": 2, "step": 1, "action": "cot", "judge_score": 3.0},
    ]
    assert [(r["question_id"], r["action"]) for r in greedy_rows(pool)] == [
        (1, "calculator"),  # tie on score broken by name, as selection's greedy rule
        (2, "cot"),
    ]


@pytest.mark.parametrize("budget", [None, 1])
def test_behaviour_logprobs_read_the_shared_system_prompt_once_and_match_each_row_alone(
    tiny_model_dir, monkeypatch, budget
):
    """The rows read the prefix they share once (the system prompt); each row's log-probs
    equal those of the row scored alone (batch of one: no sharing, no padding), also when two
    rows share their whole prompt (a state with two completions), and when the logits budget
    cuts the rows into one pass each (``budget`` 1) on the one prefix."""
    from spark_core.models.hf.backend import HFBackend
    from spark_core.training import behaviour
    from spark_core.training.behaviour import completion_logprobs

    if budget is not None:
        monkeypatch.setattr(behaviour, "LOGITS_BUDGET", budget)
    backend = HFBackend(tiny_model_dir, "cpu")
    rows = [long_row(2), long_row(0), long_row(1)]
    triples = [(r["system"], r["prompt"], r["completion"]) for r in rows]
    triples.append((rows[1]["system"], rows[1]["prompt"], "Thought: another step."))
    batched = completion_logprobs(backend, triples)
    for triple, got in zip(triples, batched, strict=True):
        (alone,) = completion_logprobs(backend, [triple])
        assert len(got) == len(alone)
        assert got == pytest.approx(alone, abs=1e-4)


def test_behaviour_logprobs_line_up_and_are_pi_old(tiny_model_dir, tokenizer, tmp_path):
    from spark_core.models.hf.backend import HFBackend
    from spark_core.training.behaviour import completion_logprobs
    from spark_core.training.ppo_trainer import OfflinePPOTrainer

    rows = [long_row(1), long_row(0)]
    rows[1]["advantage"] = -1.0
    behaviour = completion_logprobs(
        HFBackend(tiny_model_dir, "cpu"),
        [(r["system"], r["prompt"], r["completion"]) for r in rows],
    )
    behaviour[0][:3] = [float("nan")] * 3  # tokens the behaviour model did not write: pi_ref
    examples, _ = ppo_examples(
        [{**r, "behaviour_logprobs": b} for r, b in zip(rows, behaviour, strict=True)],
        tokenizer,
        4096,
    )
    for example, lp in zip(examples, behaviour, strict=True):
        assert len(lp) == sum(example["completion_mask"])
    # stored pi_beta (another model wrote the data): pi_old is the stored table, every epoch
    trainer = OfflinePPOTrainer(
        model=make_policy(tiny_model_dir),
        args=ppo_args(
            tmp_path,
            old_logprobs="behaviour",
            behaviour_source="stored",
            num_train_epochs=3,
            learning_rate=2e-2,
        ),
        train_dataset=examples,
        processing_class=tokenizer,
    )
    # pi_theta = pi_beta at the start (a fresh adapter on the generator's weights): ratio 1
    trainer.compute_loss(trainer.model, trainer.data_collator(examples))
    assert trainer._stats["ratio"] == [pytest.approx(1.0, abs=1e-5)]
    assert trainer._stats["ratio_min"][0] == pytest.approx(1.0, abs=1e-4)
    trainer._stats.clear()
    stored = {i: t.clone() for i, t in trainer._old.items()}
    trainer.train()
    # pi_old stays the behaviour policy over every epoch; the ratio moved away from 1
    assert all(torch.allclose(stored[i], trainer._old[i], 0, 0, equal_nan=True) for i in stored)
    logged = [e for e in trainer.state.log_history if "ratio_max" in e]
    assert len(logged) == 3 and logged[-1]["ratio_max"] > 1.0 > logged[-1]["ratio_min"]
    assert {"clipfrac", "kl_penalty", "kl_exact", "approx_kl", "ratio"} <= set(logged[-1])
    # the stored log-probs were checked against the recomputed ones (same fp32 numerics here)
    assert logged[-1]["behaviour_gap_max"] < 1e-4
    # stored pi_beta needs stored log-probs: the error names the fields and the fixes
    with pytest.raises(ValueError, match="behaviour_source=reference.*old_logprobs=refresh"):
        OfflinePPOTrainer(
            model=make_policy(tiny_model_dir),
            args=ppo_args(tmp_path, old_logprobs="behaviour", behaviour_source="stored"),
            train_dataset=ppo_examples(rows, tokenizer, 4096)[0],
            processing_class=tokenizer,
        )
    # pi_beta from the reference pass needs none
    OfflinePPOTrainer(
        model=make_policy(tiny_model_dir),
        args=ppo_args(tmp_path, old_logprobs="behaviour", behaviour_source="reference"),
        train_dataset=ppo_examples(rows, tokenizer, 4096)[0],
        processing_class=tokenizer,
    )


def test_token_budgets_fit_the_generator_limit():
    from spark_core.config import ConfigError, load_config

    paper = load_config("configs/paper.yaml")
    assert (paper.rollout.thought_tokens, paper.rollout.input_tokens) == (256, 256)
    demo = load_config("configs/demo.yaml")
    assert (demo.rollout.thought_tokens, demo.rollout.input_tokens) == (32, 16)
    with pytest.raises(ConfigError, match="generator.max_new_tokens"):
        load_config("configs/demo.yaml", ["rollout.thought_tokens=64"])


def test_the_judge_sees_the_thought():
    from spark_core.models.judge.prompt import JudgeItem, user_message

    item = JudgeItem(QUESTION, tuple(OPTIONS), "", "chemistry", "36 / 18.015", "1.998", "moles")
    text = user_message(item)
    assert "Thought: moles\nAction: chemistry\nAction Input: 36 / 18.015\nObservation: 1.998" in (
        text
    )
    assert QUESTION in text and "(no steps yet)" in text
    other = JudgeItem(QUESTION, tuple(OPTIONS), "", "cot", "x", "x", "moles")
    assert item.shared_part == other.shared_part  # one thought per step: still one prefix


def test_openai_logprobs_are_laid_onto_the_training_tokens(tokenizer):
    import math

    from spark_core.training.behaviour import aligned_logprobs

    thought, action, tool_input = "Divide the mass by the molar mass.", "chemistry", "36 / 18.015"

    def served(text: str, base: float) -> list[list]:
        """What a server returns for generated text: its tokens and their log-probs."""
        ids = tokenizer(text, add_special_tokens=False).input_ids
        return [[tokenizer.decode([i]), base - k] for k, i in enumerate(ids)]

    completion = render_step(thought, action, tool_input)
    generated = {"thought": served(" " + thought, -0.1), "input": served(" " + tool_input, -10)}
    out = aligned_logprobs(
        tokenizer, (SYSTEM, "Q?", completion), thought, action, tool_input, generated
    )
    fitted = fit(tokenizer, SYSTEM, "Q?", completion, 10**6)
    assert len(out) == len(fitted.completion_ids)
    known = [v for v in out if not math.isnan(v)]
    # every generated token lines up except where the label's space joins the first token
    assert len(known) >= len(generated["thought"]) + len(generated["input"]) - 2
    assert set(known) <= {lp for part in generated.values() for _, lp in part}
    pieces = [tokenizer.decode([i]) for i in fitted.completion_ids]
    for piece, value in zip(pieces, out, strict=True):
        if piece.strip() in ("Thought", "Action", ":", action, "Input"):
            assert math.isnan(value), piece  # the labels and the action were not generated
    assert (
        aligned_logprobs(
            tokenizer, (SYSTEM, "Q?", completion), thought, action, tool_input, {"thought": None}
        )
        is None
    )


def test_behaviour_passes_keep_their_logits_within_the_budget(monkeypatch):
    from spark_core.training import behaviour

    monkeypatch.setattr(behaviour, "LOGITS_BUDGET", 999)
    encoded = [([0] * p, [0] * c) for p, c in [(30, 5), (10, 5), (12, 4), (31, 9), (11, 2)]]
    passes = behaviour._passes(encoded, batch_size=8, vocab=10)
    assert sorted(i for p in passes for i in p) == list(range(5))
    for rows in passes:
        window = max(sum(map(len, encoded[j])) for j in rows) - min(
            len(encoded[j][0]) for j in rows
        )
        assert len(rows) == 1 or len(rows) * window * 10 <= 999
    assert passes == [[1, 4, 2], [0, 3]]  # prompt-length order; the long prompts apart
    assert behaviour._passes(encoded, batch_size=2, vocab=1) == [[1, 4], [2, 0], [3]]
