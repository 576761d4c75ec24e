"""The experiment as the paper writes it (issue 22): integer grades, the held-out pool, the
within-state diversity term and each reward component's share of the reward variance."""

import math
from collections import Counter
from types import SimpleNamespace

import pytest
import torch

from spark_core import CATEGORIES
from spark_core.config import DataConfig, RewardsConfig, load_config
from spark_core.data.answers import AnswerSource
from spark_core.data.questions import ingest_records, sample, validate
from spark_core.data.sources import RawRecord, read_file
from spark_core.evaluation.stats import tool_state_entropies, without_answer
from spark_core.labeling.rewards import (
    diversity_bonuses,
    variance_shares,
    within_state_bonus,
)
from spark_core.labeling.trajectories import label
from spark_core.models.constrained_actions.scoring import action_names
from spark_core.models.judge.scorers import HFJudge, Judgement, stated_grade
from spark_core.synthesis.rollout import check_actions, judge_readings
from spark_core.synthesis.selection import select_in_order


# --- integer grades ----------------------------------------------------------------------------
def test_local_judge_grade_is_the_most_probable_integer_beside_the_expectation():
    fake = SimpleNamespace(digit_ids=list(range(10)))  # token id d is the digit d
    at_end = torch.full((2, 12), -1e9)
    at_end[0, 6], at_end[0, 7] = math.log(0.4), math.log(0.6)  # P(6)=0.4, P(7)=0.6
    at_end[1, 1], at_end[1, 9] = math.log(0.7), math.log(0.3)  # P('1')=0.7, P(9)=0.3
    after_one = torch.full((2, 12), -1e9)
    after_one[:, 0], after_one[:, 11] = math.log(0.8), math.log(0.2)  # P('0'|'1') = 0.8
    (e0, g0), (e1, g1) = HFJudge._scores_from_logits(fake, at_end, after_one)
    assert (e0, g0) == (pytest.approx(6.6), 7.0)
    # '1' splits: P(1) = 0.7 * 0.2 = 0.14, P(10) = 0.7 * 0.8 = 0.56, P(9) = 0.3
    assert (e1, g1) == (pytest.approx(0.14 + 5.6 + 2.7, abs=1e-4), 10.0)


def test_openai_grade_is_the_stated_number_and_judge_grade_picks_the_reading():
    assert stated_grade("logprobs", 6.37, "6") == 6.0  # the expectation is not the grade
    assert stated_grade("text", 7.0, "Score: 7/10") == 7.0
    assert stated_grade("structured", 8.0, '{"score": 8}') == 8.0
    j = Judgement(6.37, "ok", "6", method="logprobs", grade=6.0)
    assert judge_readings(j, "integer") == {
        "score": 6.0,
        "score_expected": 6.37,
        "score_integer": 6.0,
    }
    assert judge_readings(j, "expected")["score"] == 6.37
    text = Judgement(7.0, "ok", "7", method="text", grade=7.0)
    assert judge_readings(text, "expected") == {
        "score": 7.0,
        "score_expected": None,  # no log-probs: no expectation to store
        "score_integer": 7.0,
    }
    failed = Judgement(None, "failed", "", "no score", method="text")
    assert judge_readings(failed, "integer")["score"] is None


def test_integer_grades_change_which_candidates_are_viable_at_six():
    """6.37 (expected) passes 'above 6.0'; its stated grade 6 does not."""
    expected = {"cot": 6.37, "calculator": 8.1}
    integer = {"cot": 6.0, "calculator": 8.0}
    ((_, a),) = select_in_order([(1, expected)], Counter(), "lowest_viable", 6.0)
    ((_, b),) = select_in_order([(1, integer)], Counter(), "lowest_viable", 6.0)
    assert (a.action, b.action) == ("cot", "calculator")


# --- the held-out pool -------------------------------------------------------------------------
def _many(n_per_cat):
    rows, qid = [], 1
    for cat in CATEGORIES:
        for _ in range(n_per_cat):
            rows.append(
                RawRecord(
                    f"line {qid}",
                    {
                        "question_id": qid,
                        "question": f"What is {qid}?",
                        "options": ["x", "y", "z"],
                        "answer": "A",
                        "answer_index": 0,
                        "category": cat,
                        "src": "t",
                    },
                )
            )
            qid += 1
    return rows


def test_held_out_pool_is_disjoint_stratified_and_every_sampled_question_trains():
    cfg = DataConfig(total=70, eval_total=28, seed=3)
    rows = ingest_records(_many(20), cfg).questions.to_pylist()
    train = {r["question_id"] for r in rows if r["split"] == "train"}
    evals = {r["question_id"] for r in rows if r["split"] == "eval"}
    assert (len(train), len(evals)) == (70, 28) and train.isdisjoint(evals)
    assert train == {r["question_id"] for r in sample(validate(_many(20)).accepted, cfg)}
    assert Counter(r["category"] for r in rows if r["split"] == "eval") == {
        c: 2 for c in CATEGORIES
    }
    again = ingest_records(_many(20), cfg).questions.to_pylist()
    assert again == rows  # seeded


def test_eval_total_replaces_eval_fraction():
    with pytest.raises(ValueError, match="data.eval_total .* replaces data.eval_fraction"):
        DataConfig(total=10, eval_total=5, eval_fraction=0.2)
    assert DataConfig(total=10, eval_total=5, eval_fraction=0).eval_total == 5


def test_paper_preset_pools_on_real_mmlu_pro(mmlu_pro_test):
    data = load_config("configs/paper.yaml").data
    rows = ingest_records(read_file(str(mmlu_pro_test)), data).questions.to_pylist()
    train = [r for r in rows if r["split"] == "train"]
    evals = [r for r in rows if r["split"] == "eval"]
    assert (len(train), len(evals)) == (2500, 1400)
    assert not {r["question_id"] for r in train} & {r["question_id"] for r in evals}
    assert set(Counter(r["category"] for r in evals)) == set(CATEGORIES)


# --- the within-state diversity term -----------------------------------------------------------
def test_within_state_term_on_a_hand_made_state():
    # usage so far: cot 7, calculator 3, chemistry 0; all three viable in this state
    state = {"cot": 8.0, "calculator": 7.0, "chemistry": 6.5, "finance": 2.0}
    usage = Counter({"cot": 7, "calculator": 3, "finance": 9})
    ((_, low),) = select_in_order([(1, state)], usage.copy(), "lowest_viable", 6.0)
    ((_, top),) = select_in_order([(1, state)], usage.copy(), "greedy", 6.0)
    assert (low.action, low.max_viable_usage_before) == ("chemistry", 7)  # finance is not viable
    assert within_state_bonus(low.usage_before, low.max_viable_usage_before) == pytest.approx(
        math.log(8)  # log share(cot) - log share(chemistry) = log(8/1)
    )
    assert within_state_bonus(top.usage_before, top.max_viable_usage_before) == 0.0  # the most used
    mid = within_state_bonus(3, 7)
    assert mid == pytest.approx(math.log(8 / 4))
    with pytest.raises(ValueError):
        within_state_bonus(5, 3)  # the selected one is among the viable: m >= n
    # the only viable candidate earns nothing, however rare
    ((_, only),) = select_in_order(
        [(1, {"chemistry": 7.0, "cot": 5.0})], usage.copy(), "greedy", 6.0
    )
    assert within_state_bonus(only.usage_before, only.max_viable_usage_before) == 0.0
    # a fallback (nothing viable) earns nothing either
    ((_, fb),) = select_in_order([(1, {"chemistry": 5.0, "cot": 4.0})], usage.copy(), "greedy", 6.0)
    assert not fb.viable and within_state_bonus(fb.usage_before, fb.max_viable_usage_before) == 0


def test_diversity_option_keeps_the_running_share_bonus():
    rows = [{"usage_before": 1, "total_before": 4, "max_viable_usage_before": 3}]
    within = diversity_bonuses(rows, 3, RewardsConfig())
    running = diversity_bonuses(rows, 3, RewardsConfig(diversity="running_share"))
    assert within == [pytest.approx(math.log(2))]
    assert running == [pytest.approx(1 - 2 / 7)]  # p = (1 + 1) / (4 + 3)
    with pytest.raises(ValueError, match="rerun synthesis"):
        diversity_bonuses([{"usage_before": 1, "total_before": 4}], 3, RewardsConfig())


def test_labelled_rows_carry_the_within_state_term(run_config):
    cfg = run_config("rollout.actions=[calculator,chemistry,cot]")
    q = {"question_id": 1, "question": "Q?", "options": ["a", "b"], "category": "math"}
    q["answer"] = "A"
    base = {"viable": True, "trajectory_before": "", "completion": "c", "question_id": 1}
    selected = [
        {
            **base,
            "step": 1,
            "action": "cot",
            "score": 7.0,
            "usage_before": 0,
            "total_before": 0,
            "max_viable_usage_before": 0,
        },
        {
            **base,
            "step": 2,
            "action": "chemistry",
            "score": 8.0,
            "usage_before": 1,
            "total_before": 5,
            "max_viable_usage_before": 3,
        },
    ]
    finals = [{"question_id": 1, "final_answer": "A", "answer_source": AnswerSource.STATED}]
    rows = label(cfg, [q], selected, finals).to_pylist()
    assert [r["r_diversity"] for r in rows] == pytest.approx([0.0, 0.5 * math.log(2)])


def test_variance_shares_sum_to_one_and_are_exact():
    parts = [
        {"r_quality": 0.8, "r_diversity": 0.0, "r_correct": 0.0},
        {"r_quality": 0.6, "r_diversity": 0.2, "r_correct": 0.0},
        {"r_quality": 0.6, "r_diversity": 0.0, "r_correct": 1.0},
        {"r_quality": 0.8, "r_diversity": 0.2, "r_correct": 1.0},
    ]
    for p in parts:
        p["reward"] = p["r_quality"] + p["r_diversity"] + p["r_correct"]
    shares = variance_shares(parts)
    # independent components: share = var(c) / var(reward) = var(c) / (0.01 + 0.01 + 0.25)
    assert shares == pytest.approx(
        {"r_quality": 0.01 / 0.27, "r_diversity": 0.01 / 0.27, "r_correct": 0.25 / 0.27}
    )
    flat = [{"r_quality": 1.0, "r_diversity": 0.0, "r_correct": 0.0, "reward": 1.0}] * 3
    assert variance_shares(flat) == {"r_quality": 0.0, "r_diversity": 0.0, "r_correct": 0.0}


# --- the same actions in training and evaluation -----------------------------------------------
def test_answer_is_left_out_of_training_candidates_and_of_the_evaluated_choice():
    actions = load_config("configs/paper.yaml").rollout.actions
    assert "answer" not in actions and len(actions) == 9  # synthesis' candidates (training)
    with pytest.raises(ValueError, match="unknown tools \\['answer'\\]"):
        check_actions([*actions, "answer"])  # nor can a config offer it as a candidate
    names = action_names(actions)  # evaluation scores the 9 and `answer`
    assert names == [*actions, "answer"]
    probs = [0.05] * 9 + [0.55]  # most of the mass on answering now
    kept = without_answer(probs, names)
    assert kept == pytest.approx([1 / 9] * 9)  # the 9 training actions, renormalised
    assert tool_state_entropies([probs], names) == [pytest.approx(math.log2(9))]
    assert without_answer([0.0] * 9 + [1.0], names) == []  # all on answer: no tool choice
    assert without_answer([], names) == []


# --- thought-action agreement ------------------------------------------------------------------
def test_agreement_rate_on_hand_made_steps():
    from spark_core.synthesis.agreement import agreement, tools_named
    from spark_core.synthesis.summary import summarize

    actions = load_config(None).rollout.actions
    assert tools_named("Use the Symbolic Math tool, then unit_converter.", actions) == {
        "symbolic_math",
        "unit_converter",
    }
    assert tools_named("Let me reason step by step about the math.", actions) == set()
    steps = [
        ("I will use the calculator for 3*7.", "chemistry"),  # mismatch
        ("I will use the calculator for 3*7.", "calculator"),  # agrees
        ("Look up the molar mass with chemistry or python.", "python"),  # agrees (one of two)
        ("Think it through.", "cot"),  # names nothing
        ("The calculator is not needed; reason it out.", "cot"),  # mismatch
    ]
    assert agreement(steps, actions) == {
        "steps": 5,
        "names_a_tool_rate": 4 / 5,
        "mismatch_rate": 2 / 5,
    }
    selected = [
        {"question_id": i, "action": a, "viable": True,
         "completion": f"Thought: {t}\nAction: {a}\nAction Input: x"}
        for i, (t, a) in enumerate(steps)
    ]  # fmt: skip
    _, run = summarize(actions, selected, [], [], 6.0, "local")
    row = run.to_pylist()[0]
    assert (row["thought_names_tool_rate"], row["thought_mismatch_rate"]) == (0.8, 0.4)


def test_summary_compares_viability_under_both_judge_readings():
    from spark_core.synthesis.summary import summarize

    def row(action, expected, integer):
        return {
            "question_id": 1, "step": 1, "action": action, "score": integer,
            "score_expected": expected, "score_integer": integer, "judge_status": "ok",
            "judge_cached": False, "judge_prompt_tokens": 0, "judge_completion_tokens": 0,
        }  # fmt: skip

    scores = [row("cot", 6.37, 6.0), row("calculator", 8.2, 8.0), row("python", 5.9, 6.0)]
    selected = [{"question_id": 1, "action": "calculator", "viable": True}]
    _, run = summarize(["cot", "calculator", "python"], selected, [], scores, 6.0, "local")
    r = run.to_pylist()[0]
    assert (r["viable_rate_expected"], r["viable_rate_integer"]) == (2 / 3, 1 / 3)


def test_the_dry_run_plan_counts_a_thought_per_candidate_with_per_action():
    from spark_core.protocol import Question
    from spark_core.run_plan import plan_synthesis

    qs = [Question(1, "What is 2 + 2?", ("3", "4"), "math", "B")]
    shared = load_config(None, ["rollout.steps=2"])
    per_action = load_config(None, ["rollout.steps=2", "rollout.thoughts=per_action"])
    gen_shared, judge_shared = plan_synthesis(shared, qs)
    gen_per, judge_per = plan_synthesis(per_action, qs)
    # per step: 1 thought + 9 inputs (shared) or 9 thoughts + 9 inputs; plus 1 final answer
    assert (gen_shared.calls, gen_per.calls) == (2 * 10 + 1, 2 * 18 + 1)
    assert judge_shared.calls == judge_per.calls == 18


# --- rollout.thoughts: per_action, end to end through a scripted loopback server ---------------
@pytest.mark.parametrize("mode", ["shared", "per_action"])
def test_thoughts_per_action_are_written_for_their_action(run_config, loopback_openai, mode):
    import re

    from spark_core.models.generator import make_generator
    from spark_core.models.judge.judge import make_judge
    from spark_core.protocol import Question
    from spark_core.synthesis.rollout import rollout_step
    from tasks.tools import sandbox_for

    loopback_openai.reset()

    def reply(messages: list[dict]) -> str:
        last = messages[-1]["content"]
        if messages[0]["content"].startswith("You grade one step"):
            return "7"
        fixed = re.search(r"This step's action is (\w+)\.", last)
        return f"I will use the {fixed.group(1)}." if fixed else "I will use the calculator."

    loopback_openai.state.reply_fn = reply
    url = loopback_openai.base_url
    cfg = run_config(
        *(f"{m}.backend=openai" for m in ("generator", "judge")),
        *(f"{m}.base_url={url}" for m in ("generator", "judge")),
        "judge.scoring=text",
        "judge.attempts=1",
        "rollout.actions=[calculator, python, cot]",
        f"rollout.thoughts={mode}",
    )
    q = Question(3, "What is 2 times 3?", ("5", "6"), "math", "B")
    candidates, _ = rollout_step(
        cfg,
        1,
        [q],
        {3: ""},
        make_generator(cfg.generator, None),
        make_judge(cfg.judge, None),
        sandbox_for(cfg),
    )
    thoughts = {r["action"]: r["thought"] for r in candidates.to_pylist()}
    if mode == "shared":
        assert set(thoughts.values()) == {"I will use the calculator."}
    else:
        assert thoughts == {a: f"I will use the {a}." for a in ("calculator", "python", "cot")}
    thought_requests = [
        m for m in loopback_openai.state.log if "This step's action is" in m[-1]["content"]
    ]
    assert len(thought_requests) == (3 if mode == "per_action" else 0)
