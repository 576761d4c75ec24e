"""The action protocol: one renderer, one tolerant parser."""

import pytest

from spark_core.config import ACTIONS as DEFAULT_ACTIONS
from spark_core.protocol import final_answer, parse_step, render_step, state_message, system_prompt

ACTIONS = list(DEFAULT_ACTIONS)  # the 8 tools and cot


def test_render_then_parse_roundtrip():
    text = render_step("Six doublings.", "calculator", "500 * 2**6")
    assert text == "Thought: Six doublings.\nAction: calculator\nAction Input: 500 * 2**6"
    step = parse_step(text, ACTIONS)
    assert (step.thought, step.action, step.action_input, step.ok) == (
        "Six doublings.",
        "calculator",
        "500 * 2**6",
        True,
    )


@pytest.mark.parametrize(
    "text, action, action_input",
    [
        (
            "**Thought:** use a tool\n**Action:** Calculator\n**Action Input:** 2+2",
            "calculator",
            "2+2",
        ),
        ("thought: hmm\naction: search\ninput: mailbox rule", "knowledge_search", "mailbox rule"),
        (
            "Thought: x\nAction: python\nAction Input: ```python\nprint(1)\n```\nObservation: 1",
            "python",
            "```python\nprint(1)\n```",
        ),
        ("Thought: done\nAction: final answer\nAction Input: (C)", "answer", "(C)"),
        ("Thought: I reason it out.\nAction: cot\nAction Input: so it is 4", "cot", "so it is 4"),
    ],
)
def test_tolerant_parsing(text, action, action_input):
    step = parse_step(text, ACTIONS)
    assert (step.action, step.action_input) == (action, action_input)


def test_problems_are_reported():
    step = parse_step("I think the answer is (B).", ACTIONS)
    assert step.action == "answer" and step.action_input == "(B)"
    assert "no 'Thought:' label" in step.problems and "no 'Action:' line" in step.problems
    step = parse_step("Thought: hmm\nAction: abacus\nAction Input: 1+1", ACTIONS)
    assert step.action == "cot" and "unknown action 'abacus'" in step.problems


def test_final_answer_needs_an_explicit_statement():
    assert final_answer("So the answer is (D).") == "D"
    assert final_answer("Option A looks wrong") is None


def test_prompts_list_every_action():
    prompt = system_prompt(["calculator: arithmetic"])
    assert "- calculator: arithmetic" in prompt and "- cot:" in prompt and "- answer:" in prompt
    message = state_message("What?", ["x", "y"], "")
    assert "A. x\nB. y" in message and "(none yet)" in message
